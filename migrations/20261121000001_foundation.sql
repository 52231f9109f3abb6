-- Foundation: tenants, API clients, devices and their global identity claims, profiles,
-- static groups, assignments, deployments, and the audit log.
-- Every tenant-owned table carries tenant_id first in its primary key (ready for Citus);
-- identity_claims is the one table keyed by identity instead.

CREATE TABLE tenants (
    id           uuid PRIMARY KEY,
    display_name text NOT NULL,
    domain       text NOT NULL,
    branding     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    revision     bigint NOT NULL DEFAULT 1
);

CREATE TABLE api_clients (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id           uuid NOT NULL,
    display_name text NOT NULL,
    scopes       text[] NOT NULL,
    -- argon2id PHC string; the secret itself is shown once and never stored
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
-- The token endpoint knows only the client id.
CREATE UNIQUE INDEX api_clients_by_id ON api_clients (id);

CREATE TABLE devices (
    tenant_id               uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                      uuid NOT NULL,
    serial_number           text NOT NULL,
    manufacturer            text,
    model                   text,
    product_key             text,
    group_tag               text,
    purchase_order_id       text,
    user_principal_name     text,
    display_name            text,
    device_ownership        text NOT NULL DEFAULT 'Company',
    device_category         text,
    account_enabled         boolean NOT NULL DEFAULT true,
    extension_attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    system_labels           text[] NOT NULL DEFAULT '{}',
    os_type                 text NOT NULL,
    os_version              text,
    -- The registered hash (normalised base64). Sensitive: only the audited export returns it.
    hardware_hash           text,
    -- The normalised identity (api.md's `identity` object), for matching and export.
    identity                jsonb NOT NULL,
    tpm_ek_sha256           text,
    device_public_key       jsonb,
    enrollment_state        text NOT NULL DEFAULT 'notContacted',
    enrollment_profile_name text,
    last_contacted_at       timestamptz,
    -- The computer name Unbox expanded for this device, and under which profile.
    assigned_name           text,
    assigned_name_profile_id uuid,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    revision                bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX devices_by_serial ON devices (tenant_id, lower(serial_number));
CREATE INDEX devices_by_group_tag ON devices (tenant_id, lower(group_tag));
CREATE INDEX devices_by_user ON devices (tenant_id, lower(user_principal_name));
CREATE UNIQUE INDEX devices_assigned_name_unique
    ON devices (tenant_id, lower(assigned_name)) WHERE assigned_name IS NOT NULL;

-- A hardware identity belongs to at most one tenant: its strong keys are claimed globally.
CREATE TABLE identity_claims (
    kind      text NOT NULL CHECK (kind IN ('tuple', 'tpm')),
    key       text NOT NULL,
    tenant_id uuid NOT NULL,
    device_id uuid NOT NULL,
    PRIMARY KEY (kind, key),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX identity_claims_by_device ON identity_claims (tenant_id, device_id);

CREATE TABLE profiles (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id           uuid NOT NULL,
    display_name text NOT NULL,
    -- unbox_domain::profile::ProfileSettings as JSON
    settings     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    revision     bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE groups (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id               uuid NOT NULL,
    display_name     text NOT NULL,
    description      text,
    membership_type  text NOT NULL CHECK (membership_type IN ('static', 'dynamic')),
    membership_rule  text,
    processing_state text NOT NULL DEFAULT 'on' CHECK (processing_state IN ('on', 'paused')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    revision         bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id),
    CHECK ((membership_type = 'dynamic') = (membership_rule IS NOT NULL))
);

CREATE TABLE group_members (
    tenant_id uuid NOT NULL,
    group_id  uuid NOT NULL,
    device_id uuid NOT NULL,
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, group_id, device_id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX group_members_by_device ON group_members (tenant_id, device_id);

CREATE TABLE profile_assignments (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL,
    profile_id  uuid NOT NULL,
    target_kind text NOT NULL CHECK (target_kind IN ('group', 'allDevices', 'device')),
    group_id    uuid,
    device_id   uuid,
    mode        text NOT NULL CHECK (mode IN ('include', 'exclude')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, profile_id) REFERENCES profiles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, group_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE,
    CHECK ((target_kind = 'group') = (group_id IS NOT NULL)),
    CHECK ((target_kind = 'device') = (device_id IS NOT NULL)),
    -- Excluding "all devices" means nothing (design.md); the API refuses it with a 422 first.
    CHECK (NOT (target_kind = 'allDevices' AND mode = 'exclude'))
);
CREATE UNIQUE INDEX profile_assignments_unique ON profile_assignments
    (tenant_id, profile_id, target_kind, coalesce(group_id, device_id), mode) NULLS NOT DISTINCT;
CREATE INDEX profile_assignments_by_group ON profile_assignments (tenant_id, group_id);
CREATE INDEX profile_assignments_by_device ON profile_assignments (tenant_id, device_id);

-- A device's deployment: opened by a profile download, continued by downloads within an hour.
CREATE TABLE deployments (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL,
    device_id        uuid NOT NULL,
    profile_id       uuid,
    profile_name     text,
    status           text NOT NULL DEFAULT 'inProgress'
                     CHECK (status IN ('inProgress', 'succeeded', 'failed')),
    opened_at        timestamptz NOT NULL DEFAULT now(),
    last_download_at timestamptz NOT NULL DEFAULT now(),
    last_event_at    timestamptz,
    finished_at      timestamptz,
    timeout_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX deployments_by_device ON deployments (tenant_id, device_id, opened_at DESC);

CREATE TABLE audit_log (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor_kind    text NOT NULL,
    actor_id      text,
    action        text NOT NULL,
    resource_type text NOT NULL,
    resource_id   text,
    before        jsonb,
    after         jsonb,
    request_id    text,
    PRIMARY KEY (tenant_id, id)
);

-- The profile each device gets from static groups, direct assignments and the all-devices
-- default, by the resolution order of design.md: exclusions first, then the device tier, the
-- group tier and the all-devices tier; oldest-created profile wins, ties by id. Lists and
-- filters over many devices use it; single-device reads resolve in the server and explain.
CREATE VIEW effective_profiles AS
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
                 SELECT 1 FROM group_members m
                 WHERE m.tenant_id = d.tenant_id AND m.group_id = a.group_id AND m.device_id = d.id)))
      AND NOT EXISTS (
          SELECT 1 FROM profile_assignments x
          WHERE x.tenant_id = a.tenant_id AND x.profile_id = a.profile_id AND x.mode = 'exclude'
            AND ((x.target_kind = 'device' AND x.device_id = d.id)
                 OR (x.target_kind = 'group' AND EXISTS (
                       SELECT 1 FROM group_members m
                       WHERE m.tenant_id = d.tenant_id AND m.group_id = x.group_id
                         AND m.device_id = d.id))))
    ORDER BY CASE a.target_kind WHEN 'device' THEN 1 WHEN 'group' THEN 2 ELSE 3 END,
             p.created_at, p.id
    LIMIT 1
) winner ON true;
