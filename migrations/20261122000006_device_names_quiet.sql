-- The device call names devices as they first download (one per device in a boot storm).
-- Those writes no longer notify every instance: a notification's commit takes PostgreSQL's
-- global notify-queue lock, which serialised the first downloads. An instance that still
-- thinks a device unnamed gets the existing name back when it tries to name it
-- (`devices::assign_name`), so the caches need not hear of names.
DROP TRIGGER devices_notify_device_cache_update ON devices;
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
       OR OLD.device_public_key IS DISTINCT FROM NEW.device_public_key)
    EXECUTE FUNCTION notify_device_cache_device();
