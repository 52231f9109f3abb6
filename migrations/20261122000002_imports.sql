-- Bulk registration: partners (OEMs, resellers) and the tenants' consent to them, import jobs
-- and the per-row result of every job.
-- Partners are global, like tenants. Tenant-owned tables carry tenant_id first in their key.

CREATE TABLE partners (
    id           uuid PRIMARY KEY,
    display_name text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- API clients of a partner (client credentials, like api_clients for tenants).
CREATE TABLE partner_clients (
    partner_id   uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    id           uuid NOT NULL,
    display_name text NOT NULL,
    scopes       text[] NOT NULL,
    -- argon2id PHC string; the secret itself is shown once and never stored
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, id)
);
-- The token endpoint knows only the client id.
CREATE UNIQUE INDEX partner_clients_by_id ON partner_clients (id);

-- A tenant's consent: the partner may register devices into the tenant.
CREATE TABLE partner_authorizations (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    partner_id uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, partner_id)
);
CREATE INDEX partner_authorizations_by_partner ON partner_authorizations (partner_id);

-- An import job: an uploaded CSV or JSON batch, spooled to a file under the data directory,
-- processed in chunks by a background worker. `checkpoint_row` is the last row whose result is
-- committed (a physical line for CSV, an index into `devices` for JSON), written in the same
-- transaction as that chunk's devices and items, so a resumed job starts right after it.
CREATE TABLE imports (
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              uuid NOT NULL,
    -- Set when a partner uploaded the batch; NULL for the tenant's own imports.
    partner_id      uuid REFERENCES partners (id),
    actor_kind      text NOT NULL,
    actor_id        text,
    format          text NOT NULL CHECK (format IN ('csv', 'json')),
    dry_run         boolean NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'processing', 'complete', 'partial', 'error')),
    idempotency_key text,
    -- SHA-256 of the format, the dry-run flag and the body: an Idempotency-Key replay must match.
    fingerprint     text NOT NULL,
    -- The spooled upload: a file name under DATA_DIR/imports/, on the storage of `spool_node`
    -- (the id of the data directory that holds it; instances sharing one share the id).
    spool_file      text NOT NULL,
    spool_node      uuid NOT NULL,
    byte_size       bigint NOT NULL,
    encoding        text,
    -- Data rows in the file, counted at upload.
    total           bigint NOT NULL,
    succeeded       bigint NOT NULL DEFAULT 0,
    failed          bigint NOT NULL DEFAULT 0,
    checkpoint_row  bigint,
    -- Consecutive claims of the job by a worker without progress (a poison job stops).
    attempts        integer NOT NULL DEFAULT 0,
    -- File-level warnings (unknown columns, the switch to Windows-1252).
    warnings        text[] NOT NULL DEFAULT '{}',
    -- Why the job stopped before its last row, or why it is waiting for a retry.
    message         text,
    request_id      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (succeeded + failed <= total)
);
CREATE UNIQUE INDEX imports_idempotency ON imports (tenant_id, partner_id, idempotency_key)
    NULLS NOT DISTINCT WHERE idempotency_key IS NOT NULL;
-- What the workers look for.
CREATE INDEX imports_pending ON imports (created_at) WHERE status IN ('queued', 'processing');
CREATE INDEX imports_by_partner ON imports (partner_id, id) WHERE partner_id IS NOT NULL;

-- The result of one row of an import. `tuple_key`/`tpm_key` are the strong keys of a row the
-- in-file duplicate check recorded (a later row sharing one is ZtdDeviceDuplicated); a resumed
-- job rebuilds that check from them, and from the claims of the devices its rows registered
-- (whose keys are therefore not stored here too). `device_id` is the device the row created (no foreign
-- key: the item stays as history when the device is deleted later).
-- No foreign key to imports either: its check, row by row, would halve the rate at which
-- items are written. A statement trigger on imports deletes the items of deleted jobs (and so
-- of a deleted tenant, whose jobs go by cascade) instead.
CREATE TABLE import_items (
    tenant_id     uuid NOT NULL,
    import_id     uuid NOT NULL,
    line          bigint NOT NULL,
    serial_number text,
    status        text NOT NULL CHECK (status IN ('complete', 'error')),
    error_code    integer,
    error_name    text,
    message       text,
    -- A JSON array of strings; NULL when there are none.
    warnings      jsonb,
    device_id     uuid,
    tuple_key     text,
    tpm_key       text,
    PRIMARY KEY (tenant_id, import_id, line)
);

CREATE FUNCTION delete_import_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM import_items i USING deleted_imports d
    WHERE i.tenant_id = d.tenant_id AND i.import_id = d.id;
    RETURN NULL;
END $$;

CREATE TRIGGER imports_delete_items
    AFTER DELETE ON imports
    REFERENCING OLD TABLE AS deleted_imports
    FOR EACH STATEMENT EXECUTE FUNCTION delete_import_items();
