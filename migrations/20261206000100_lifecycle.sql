-- Service lifecycle: a service is what one create order made; later orders (suspend, unsuspend,
-- resize, terminate) are jobs on it, run one at a time in the order intake committed them.

-- What billing asked for (`create`, `suspend`, ...), the service a job acts on (the create
-- order's id; a create's own order id), and the job it runs after: a job is claimable only once
-- that one is final, which chains the jobs of one service in commit order.
ALTER TABLE jobs
    ADD COLUMN action          VARCHAR(16)  CHARACTER SET ascii NOT NULL DEFAULT 'create' AFTER kind,
    ADD COLUMN target_order_id VARCHAR(128) NULL AFTER action,
    ADD COLUMN after_job_id    CHAR(36)     CHARACTER SET ascii NULL AFTER target_order_id,
    -- Why a cancel was asked for (an operator, or a terminate that superseded the job); kept
    -- out of `data`, which the engine rewrites on every save.
    ADD COLUMN cancel_reason   VARCHAR(512) NULL AFTER cancel_requested,
    ADD KEY ix_jobs_target (target_order_id, created_at),
    ADD KEY ix_jobs_after (after_job_id);

UPDATE jobs SET target_order_id = order_id WHERE target_order_id IS NULL;

CREATE TABLE services (
    -- The create order's id: the name billing's later orders use (`target_order_id`).
    target_order_id      VARCHAR(128) NOT NULL,
    create_job_id        CHAR(36)     CHARACTER SET ascii NOT NULL,
    project_id           VARCHAR(64)  NOT NULL,
    -- provisioning | active | suspended | resizing | terminating | terminated | failed
    state                VARCHAR(16)  CHARACTER SET ascii NOT NULL,
    -- What the service has in the cloud (set when the create completes; kept after terminate,
    -- as the record of what was deleted).
    server_id            VARCHAR(64)  NULL,
    port_id              VARCHAR(64)  NULL,
    volume_id            VARCHAR(64)  NULL,
    -- The server's flavor: Nova's name and id.
    flavor               VARCHAR(255) NULL,
    flavor_id            VARCHAR(64)  NULL,
    -- The newest job of the service: the next action intake commits runs after it.
    last_job_id          CHAR(36)     CHARACTER SET ascii NOT NULL,
    -- The order id of the last action that ended on this service.
    last_action_order_id VARCHAR(128) NULL,
    -- A terminate was committed: every later action is cancelled at once.
    terminate_job_id     CHAR(36)     CHARACTER SET ascii NULL,
    created_at           DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at           DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (target_order_id),
    KEY ix_services_project (project_id, state),
    KEY ix_services_state (state, updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The services of the jobs that exist already.
INSERT INTO services (target_order_id, create_job_id, project_id, state, server_id, port_id, volume_id,
                      last_job_id, created_at, updated_at)
SELECT order_id, id, project_id,
       CASE state WHEN 'completed' THEN 'active'
                  WHEN 'failed' THEN 'failed'
                  WHEN 'cancelled' THEN 'failed'
                  ELSE 'provisioning' END,
       IF(state = 'completed', server_id, NULL),
       IF(state = 'completed', port_id, NULL),
       IF(state = 'completed', volume_id, NULL),
       id, created_at, updated_at
FROM jobs WHERE kind = 'create';

-- The stable contract for anyone who reads service state from the database (see README).
-- While the create runs, the ids are the create job's (what exists so far).
CREATE VIEW service_status AS
SELECT
    s.target_order_id                    AS target_order_id,
    s.project_id                         AS project_id,
    s.state                              AS state,
    COALESCE(s.server_id, c.server_id)   AS server_id,
    COALESCE(s.port_id, c.port_id)       AS port_id,
    COALESCE(s.volume_id, c.volume_id)   AS volume_id,
    s.flavor                             AS flavor,
    s.updated_at                         AS updated_at,
    s.last_action_order_id               AS last_action_order_id,
    s.create_job_id                      AS create_job_id,
    s.created_at                         AS created_at
FROM services s LEFT JOIN jobs c ON c.id = s.create_job_id;

-- job_status gains the action and the service it acts on (additive).
CREATE OR REPLACE VIEW job_status AS
SELECT
    j.id              AS job_id,
    j.order_id        AS order_id,
    j.project_id      AS project_id,
    j.state           AS state,
    j.step            AS step,
    j.attempts        AS attempts,
    j.error_class     AS error_class,
    j.error_message   AS error_message,
    j.server_id       AS server_id,
    j.port_id         AS port_id,
    j.volume_id       AS volume_id,
    j.created_at      AS created_at,
    j.updated_at      AS updated_at,
    j.finished_at     AS finished_at,
    j.action          AS action,
    j.target_order_id AS target_order_id
FROM jobs j;
