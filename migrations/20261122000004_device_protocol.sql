-- The device protocol: deployment events and the deployment state machine, challenge nonces
-- for proof of possession, and the notifications that keep per-instance device caches right.

-- A deployment times out when it has had no event (or download) for `timeout_minutes`:
-- `timeout_at` slides forward with every event. `failure_reason` says why it failed.
ALTER TABLE deployments
    ADD COLUMN timeout_minutes integer NOT NULL DEFAULT 1440 CHECK (timeout_minutes > 0),
    ADD COLUMN failure_reason  text
        CHECK (failure_reason IN ('event', 'timeout', 'superseded')),
    ADD COLUMN last_phase      text;

-- The timeout sweep finds open deployments by when they lapse.
CREATE INDEX deployments_open_by_timeout ON deployments (timeout_at) WHERE status = 'inProgress';

-- The progress a device reports. A repeated event (same deployment, phase and status) is the
-- same event: its first report is kept, which makes retries idempotent.
CREATE TABLE deployment_events (
    tenant_id     uuid NOT NULL,
    deployment_id uuid NOT NULL,
    phase         text NOT NULL
                  CHECK (phase IN ('profileApplied', 'deviceSetup', 'accountSetup', 'completed')),
    status        text NOT NULL CHECK (status IN ('inProgress', 'succeeded', 'failed')),
    message       text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, deployment_id, phase, status),
    FOREIGN KEY (tenant_id, deployment_id) REFERENCES deployments (tenant_id, id) ON DELETE CASCADE
);

-- Challenge nonces for devices that prove possession of their key. Not tenant-owned: a
-- challenge is answered for any well-formed identity, so that it reveals nothing. `subject`
-- binds the nonce to the identity's strong keys. Consumed with DELETE … RETURNING.
CREATE TABLE device_nonces (
    nonce      text PRIMARY KEY,
    subject    text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX device_nonces_by_expiry ON device_nonces (expires_at);

-- Per-instance caches of the device call (claim keys → device, the device's data, its
-- resolved profile, the tenant's profiles and branding) learn of writes made elsewhere through
-- NOTIFY on `unbox_device_changed`. Payload: `origin|tenant` (anything of the tenant may have
-- changed) or `origin|tenant:device` (that device changed). `origin` is the writing session's
-- `unbox.origin` setting, so an instance can skip what it wrote itself; empty otherwise.
CREATE FUNCTION notify_device_cache_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_tenant uuid;
BEGIN
    -- Separate statements: a record has only its own table's fields.
    IF TG_TABLE_NAME = 'tenants' THEN
        IF TG_OP = 'DELETE' THEN row_tenant := OLD.id; ELSE row_tenant := NEW.id; END IF;
    ELSIF TG_OP = 'DELETE' THEN
        row_tenant := OLD.tenant_id;
    ELSE
        row_tenant := NEW.tenant_id;
    END IF;
    -- Identical notifications in one transaction are delivered once.
    PERFORM pg_notify('unbox_device_changed',
        coalesce(current_setting('unbox.origin', true), '') || '|' || row_tenant::text);
    RETURN NULL;
END $$;

CREATE FUNCTION notify_device_cache_device() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed devices%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    PERFORM pg_notify('unbox_device_changed',
        coalesce(current_setting('unbox.origin', true), '') || '|'
        || changed.tenant_id::text || ':' || changed.id::text);
    RETURN NULL;
END $$;

-- What resolution reads: profiles, assignments, groups (rules) and static members, branding.
CREATE TRIGGER profiles_notify_device_cache AFTER INSERT OR UPDATE OR DELETE ON profiles
    FOR EACH ROW EXECUTE FUNCTION notify_device_cache_tenant();
CREATE TRIGGER profile_assignments_notify_device_cache
    AFTER INSERT OR UPDATE OR DELETE ON profile_assignments
    FOR EACH ROW EXECUTE FUNCTION notify_device_cache_tenant();
CREATE TRIGGER groups_notify_device_cache AFTER INSERT OR UPDATE OR DELETE ON groups
    FOR EACH ROW EXECUTE FUNCTION notify_device_cache_tenant();
CREATE TRIGGER group_members_notify_device_cache AFTER INSERT OR DELETE ON group_members
    FOR EACH ROW EXECUTE FUNCTION notify_device_cache_tenant();
CREATE TRIGGER tenants_notify_device_cache AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION notify_device_cache_tenant();

-- A device's own served or rule-visible fields, and its deletion (which frees its claims).
-- last_contacted_at, the deployment columns and the like do not concern the caches.
CREATE TRIGGER devices_notify_device_cache_update AFTER UPDATE ON devices
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
       OR OLD.enrollment_profile_name IS DISTINCT FROM NEW.enrollment_profile_name
       OR OLD.enrollment_state IS DISTINCT FROM NEW.enrollment_state
       OR OLD.tpm_ek_sha256 IS DISTINCT FROM NEW.tpm_ek_sha256
       OR OLD.device_public_key IS DISTINCT FROM NEW.device_public_key
       OR OLD.assigned_name IS DISTINCT FROM NEW.assigned_name
       OR OLD.assigned_name_profile_id IS DISTINCT FROM NEW.assigned_name_profile_id)
    EXECUTE FUNCTION notify_device_cache_device();
CREATE TRIGGER devices_notify_device_cache_delete AFTER DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION notify_device_cache_device();

-- The device call gives a device its computer name unless another device of the tenant has it
-- as its assigned name or its display name: both lookups are by index (the first exists).
CREATE INDEX devices_by_display_name ON devices (tenant_id, lower(display_name))
    WHERE display_name IS NOT NULL;
