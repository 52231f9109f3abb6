-- What the device-cache notifications say, kept for a while: an instance whose notification
-- connection dropped (a database restart) replays the changes it may have missed, instead of
-- dropping its whole cache and reloading every device from the database.
--
-- `xid` is the writing transaction's: a change is missed exactly when its transaction was not
-- yet visible in the last snapshot the instance knows it had heard everything up to. Rows are
-- pruned after an hour; an instance that was cut off longer starts its cache over.
CREATE TABLE device_cache_changes (
    tenant_id  uuid NOT NULL,
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    -- NULL: anything of the tenant may have changed.
    device_id  uuid,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- The writing instance (`unbox.origin`, as in the notifications): it skips its own.
    origin     text DEFAULT current_setting('unbox.origin', true),
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX device_cache_changes_by_xid ON device_cache_changes (xid);
CREATE INDEX device_cache_changes_by_time ON device_cache_changes (changed_at);

CREATE OR REPLACE FUNCTION notify_device_cache_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
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
    INSERT INTO device_cache_changes (tenant_id) VALUES (row_tenant);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION notify_device_cache_device() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed devices%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    PERFORM pg_notify('unbox_device_changed',
        coalesce(current_setting('unbox.origin', true), '') || '|'
        || changed.tenant_id::text || ':' || changed.id::text);
    INSERT INTO device_cache_changes (tenant_id, device_id) VALUES (changed.tenant_id, changed.id);
    RETURN NULL;
END $$;
