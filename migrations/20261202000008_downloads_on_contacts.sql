-- A download that continues an open deployment (an OOBE retry) is recorded on the device's
-- narrow contact row, which every download writes anyway, instead of also updating its
-- deployment row: one row write per download in a boot storm. A deployment's last download is
-- the later of its own `last_download_at` (set when it opened) and these columns while they
-- name it.
ALTER TABLE device_contacts
    ADD COLUMN last_download_deployment_id uuid,
    ADD COLUMN last_download_at timestamptz;
