-- Dynamic groups: their stored membership, recomputed in the background, and the queue of
-- devices whose properties changed since.

-- What the stored membership of a group follows, and how far a recompute has come.
ALTER TABLE groups
    -- Bumped whenever the rule or its processing state changes: the membership is current when
    -- membership_revision = rule_revision.
    ADD COLUMN rule_revision       bigint NOT NULL DEFAULT 1,
    ADD COLUMN membership_revision bigint NOT NULL DEFAULT 0,
    -- A recompute's progress: devices with ids up to here are done (resumable after a crash).
    ADD COLUMN membership_cursor   uuid,
    -- The time the stored membership was last complete: the start of the recompute that made it.
    ADD COLUMN membership_as_of    timestamptz,
    ADD COLUMN membership_started_at timestamptz,
    ADD COLUMN member_count        bigint NOT NULL DEFAULT 0,
    -- Which instance is recomputing, until when (another takes over once it lapses).
    ADD COLUMN membership_lease_until timestamptz;

-- Static groups are always complete.
UPDATE groups SET membership_revision = rule_revision, membership_as_of = now()
WHERE membership_type = 'static';

CREATE TABLE dynamic_group_members (
    tenant_id uuid NOT NULL,
    group_id  uuid NOT NULL,
    device_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, group_id, device_id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX dynamic_group_members_by_device ON dynamic_group_members (tenant_id, device_id);

-- Devices whose rule-visible properties changed: the background worker re-evaluates them
-- against the tenant's rules and corrects their stored memberships.
CREATE TABLE membership_dirty_devices (
    tenant_id uuid NOT NULL,
    device_id uuid NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, device_id)
);

-- Every path that writes devices (the API, imports, the device call) queues them here, in the
-- same transaction, so no change can be missed. Inserts are queued set-based, per statement.
CREATE FUNCTION queue_inserted_devices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO membership_dirty_devices (tenant_id, device_id)
    SELECT tenant_id, id FROM inserted_devices
    ON CONFLICT (tenant_id, device_id) DO NOTHING;
    PERFORM pg_notify('unbox_membership', '');
    RETURN NULL;
END $$;

CREATE TRIGGER devices_inserted_queue_membership
    AFTER INSERT ON devices
    REFERENCING NEW TABLE AS inserted_devices
    FOR EACH STATEMENT EXECUTE FUNCTION queue_inserted_devices();

CREATE FUNCTION queue_updated_device() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO membership_dirty_devices (tenant_id, device_id)
    VALUES (NEW.tenant_id, NEW.id)
    ON CONFLICT (tenant_id, device_id) DO NOTHING;
    PERFORM pg_notify('unbox_membership', '');
    RETURN NULL;
END $$;

-- Only the properties rules can read (rules.md's device property table).
CREATE TRIGGER devices_updated_queue_membership
    AFTER UPDATE ON devices
    FOR EACH ROW
    WHEN (OLD.serial_number IS DISTINCT FROM NEW.serial_number
       OR OLD.manufacturer IS DISTINCT FROM NEW.manufacturer
       OR OLD.model IS DISTINCT FROM NEW.model
       OR OLD.group_tag IS DISTINCT FROM NEW.group_tag
       OR OLD.purchase_order_id IS DISTINCT FROM NEW.purchase_order_id
       OR OLD.user_principal_name IS DISTINCT FROM NEW.user_principal_name
       OR OLD.display_name IS DISTINCT FROM NEW.display_name
       OR OLD.device_ownership IS DISTINCT FROM NEW.device_ownership
       OR OLD.device_category IS DISTINCT FROM NEW.device_category
       OR OLD.account_enabled IS DISTINCT FROM NEW.account_enabled
       OR OLD.extension_attributes IS DISTINCT FROM NEW.extension_attributes
       OR OLD.system_labels IS DISTINCT FROM NEW.system_labels
       OR OLD.os_type IS DISTINCT FROM NEW.os_type
       OR OLD.os_version IS DISTINCT FROM NEW.os_version
       OR OLD.enrollment_profile_name IS DISTINCT FROM NEW.enrollment_profile_name)
    EXECUTE FUNCTION queue_updated_device();

-- Lists over many devices follow stored membership: static members and dynamic ones.
CREATE OR REPLACE VIEW effective_profiles AS
WITH memberships AS (
    SELECT tenant_id, group_id, device_id FROM group_members
    UNION ALL
    SELECT tenant_id, group_id, device_id FROM dynamic_group_members
)
SELECT d.tenant_id, d.id AS device_id, winner.profile_id, winner.assigned_at
FROM devices d
LEFT JOIN LATERAL (
    SELECT a.profile_id, a.created_at AS assigned_at
    FROM profile_assignments a
    JOIN profiles p ON p.tenant_id = a.tenant_id AND p.id = a.profile_id
    WHERE a.tenant_id = d.tenant_id
      AND a.mode = 'include'
      AND (a.target_kind = 'allDevices'
           OR (a.target_kind = 'device' AND a.device_id = d.id)
           OR (a.target_kind = 'group' AND EXISTS (
                 SELECT 1 FROM memberships m
                 WHERE m.tenant_id = d.tenant_id AND m.group_id = a.group_id AND m.device_id = d.id)))
      AND NOT EXISTS (
          SELECT 1 FROM profile_assignments x
          WHERE x.tenant_id = a.tenant_id AND x.profile_id = a.profile_id AND x.mode = 'exclude'
            AND ((x.target_kind = 'device' AND x.device_id = d.id)
                 OR (x.target_kind = 'group' AND EXISTS (
                       SELECT 1 FROM memberships m
                       WHERE m.tenant_id = d.tenant_id AND m.group_id = x.group_id
                         AND m.device_id = d.id))))
    ORDER BY CASE a.target_kind WHEN 'device' THEN 1 WHEN 'group' THEN 2 ELSE 3 END,
             p.created_at, p.id
    LIMIT 1
) winner ON true;
