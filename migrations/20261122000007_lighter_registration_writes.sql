-- Registering a device writes less (imports write 100,000s of them at once):
--
-- 1. A device's identity claims go with it by a statement trigger instead of a foreign key.
--    The key's check ran a query, and locked the device's new row, for every claim written;
--    claims are only ever written with their device, in its transaction, so the check never
--    caught anything. Deleting a device (or its tenant) still deletes its claims.
ALTER TABLE identity_claims DROP CONSTRAINT identity_claims_tenant_id_device_id_fkey;

CREATE FUNCTION delete_device_claims() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM identity_claims c USING deleted_devices d
    WHERE c.tenant_id = d.tenant_id AND c.device_id = d.id;
    RETURN NULL;
END $$;

CREATE TRIGGER devices_delete_claims
    AFTER DELETE ON devices
    REFERENCING OLD TABLE AS deleted_devices
    FOR EACH STATEMENT EXECUTE FUNCTION delete_device_claims();

-- 2. The user and group-tag lookups index only devices that have a value: most registered
--    devices have no user yet, and many no tag, and a NULL is never looked up.
DROP INDEX devices_by_user;
CREATE INDEX devices_by_user ON devices (tenant_id, lower(user_principal_name))
    WHERE user_principal_name IS NOT NULL;
DROP INDEX devices_by_group_tag;
CREATE INDEX devices_by_group_tag ON devices (tenant_id, lower(group_tag))
    WHERE group_tag IS NOT NULL;
