-- Tenants (issue 12): a billing customer's home in OpenStack (a Keystone project, a user with
-- roles on it, quotas on Nova, Neutron and Cinder), made, changed and closed by tenant orders.

-- One row per tenant_ref (billing's customer id): what its jobs made, and the newest of them
-- (tenant jobs run one at a time, chained like a service's). Written by intake (the row, the
-- chain) and by the engine in the same transaction as the tenant job's fenced save.
CREATE TABLE tenants (
    tenant_ref    VARCHAR(128) NOT NULL,
    create_job_id CHAR(36)     CHARACTER SET ascii NOT NULL,
    -- Keystone ids, known once the create made (or adopted) them.
    project_id    VARCHAR(64)  NULL,
    domain_id     VARCHAR(64)  NULL,
    user_id       VARCHAR(64)  NULL,
    -- provisioning | active | closing | closed | failed
    state         VARCHAR(16)  CHARACTER SET ascii NOT NULL,
    -- The limits last set (JSON: instances, cores, ram_mb, volumes, gigabytes, ports, networks,
    -- floating_ips; -1 is unlimited).
    quotas        TEXT         NULL,
    -- The newest tenant job: the next tenant order intake commits runs after it.
    last_job_id   CHAR(36)     CHARACTER SET ascii NOT NULL,
    -- A close was committed: later updates and VM creates naming the tenant are cancelled.
    close_job_id  CHAR(36)     CHARACTER SET ascii NULL,
    created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (tenant_ref),
    KEY ix_tenants_project (project_id),
    KEY ix_tenants_state (state, updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The tenant a job acts on (tenant jobs) or provisions into (a create that named its project by
-- tenant_ref; its project_id is filled in when the tenant becomes active). Services keep it too,
-- so that a close finds them.
ALTER TABLE jobs
    ADD COLUMN tenant_ref VARCHAR(128) NULL AFTER target_order_id,
    ADD KEY ix_jobs_tenant (tenant_ref, project_id);
ALTER TABLE services
    ADD COLUMN tenant_ref VARCHAR(128) NULL AFTER project_id,
    ADD KEY ix_services_tenant (tenant_ref, state);

-- The stable contract for anyone who reads tenant state from the database (see README).
CREATE VIEW tenant_status AS
SELECT
    t.tenant_ref    AS tenant_ref,
    t.project_id    AS project_id,
    t.domain_id     AS domain_id,
    t.user_id       AS user_id,
    t.state         AS state,
    t.quotas        AS quotas,
    t.updated_at    AS updated_at,
    t.created_at    AS created_at,
    t.create_job_id AS create_job_id,
    t.last_job_id   AS last_job_id
FROM tenants t;
