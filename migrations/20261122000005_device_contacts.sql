-- A device's last contact, written by the device call's batch on every profile download: a
-- narrow row of its own, so that a boot storm updates ~50-byte rows in place (HOT, room left
-- by the fill factor) rather than new versions of the wide devices rows, their indexes and
-- their triggers. Reads take the later of this and devices.last_contacted_at (older writes).
CREATE TABLE device_contacts (
    tenant_id         uuid NOT NULL,
    device_id         uuid NOT NULL,
    last_contacted_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
) WITH (fillfactor = 50);

-- A continued deployment moves its last_download_at on every download: leave room on new
-- pages for those updates to stay on the page.
ALTER TABLE deployments SET (fillfactor = 70);
