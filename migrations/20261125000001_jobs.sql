-- The job store: one row per billing order, its transitions, and the event outbox.
-- MySQL 8.0+ / MariaDB 10.6+. Times are UTC, DATETIME(6).

CREATE TABLE jobs (
    id               CHAR(36)     CHARACTER SET ascii NOT NULL,
    -- Billing's order id: the idempotency key of intake.
    order_id         VARCHAR(128) NOT NULL,
    project_id       VARCHAR(64)  NOT NULL,
    -- The kind of job, i.e. its list of steps (only 'create' today).
    kind             VARCHAR(32)  CHARACTER SET ascii NOT NULL DEFAULT 'create',
    -- The validated order as received, and the SHA-256 of its body (to spot resends that differ).
    order_body       MEDIUMTEXT   NOT NULL,
    order_digest     CHAR(64)     CHARACTER SET ascii NOT NULL,
    -- queued | in_progress | rolling_back | completed | failed | cancelled
    state            VARCHAR(16)  CHARACTER SET ascii NOT NULL,
    step             VARCHAR(32)  CHARACTER SET ascii NOT NULL,
    -- Attempts of the current step, and of all steps (what the event reports).
    step_attempts    INT UNSIGNED NOT NULL DEFAULT 0,
    attempts         INT UNSIGNED NOT NULL DEFAULT 0,
    -- When the job may next be claimed or polled.
    next_run_at      DATETIME(6)  NOT NULL,
    deadline_at      DATETIME(6)  NULL,
    -- Lease: who works on the job until when. fence is incremented by every claim and checked by
    -- every write, so a worker that lost its lease can no longer write.
    lease_owner      VARCHAR(128) NULL,
    lease_expires_at DATETIME(6)  NULL,
    fence            BIGINT UNSIGNED NOT NULL DEFAULT 0,
    -- Claims of the current step that ended without progress: a worker died during it.
    crashes          INT UNSIGNED NOT NULL DEFAULT 0,
    -- The step whose create call may have been sent without its answer being recorded: before
    -- it creates again, the engine looks for a resource carrying the job's mark and adopts it.
    intent           VARCHAR(32)  CHARACTER SET ascii NULL,
    -- What the job created.
    port_id          VARCHAR(64)  NULL,
    server_id        VARCHAR(64)  NULL,
    volume_id        VARCHAR(64)  NULL,
    -- Kind-specific data of the engine (resolved ids, addresses, device, ...), JSON.
    data             MEDIUMTEXT   NULL,
    -- The error that failed the job (kept through the rollback).
    error_class      VARCHAR(32)  CHARACTER SET ascii NULL,
    error_step       VARCHAR(32)  CHARACTER SET ascii NULL,
    error_message    TEXT         NULL,
    -- An operator asked to cancel (who and why are in job_history).
    cancel_requested TINYINT(1)   NOT NULL DEFAULT 0,
    created_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    finished_at      DATETIME(6)  NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_jobs_order_id (order_id),
    KEY ix_jobs_due (state, next_run_at),
    KEY ix_jobs_step (step, next_run_at),
    KEY ix_jobs_lease_owner (lease_owner),
    KEY ix_jobs_project (project_id, state),
    KEY ix_jobs_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every transition of every job: the audit trail and the timings.
CREATE TABLE job_history (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    job_id      CHAR(36)     CHARACTER SET ascii NOT NULL,
    at          DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    from_state  VARCHAR(16)  CHARACTER SET ascii NULL,
    to_state    VARCHAR(16)  CHARACTER SET ascii NOT NULL,
    from_step   VARCHAR(32)  CHARACTER SET ascii NULL,
    to_step     VARCHAR(32)  CHARACTER SET ascii NOT NULL,
    -- The attempt of from_step that ended here.
    attempt     INT UNSIGNED NOT NULL DEFAULT 0,
    -- Time spent in from_step (ms), when known.
    duration_ms BIGINT UNSIGNED NULL,
    -- A worker id, an operator (admin commands), or 'intake'.
    actor       VARCHAR(128) NULL,
    detail      TEXT         NULL,
    PRIMARY KEY (id),
    KEY ix_history_job (job_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Transactional outbox of completion events: written with the job's final state, relayed to
-- the broker with publisher confirms, marked sent when confirmed.
CREATE TABLE outbox (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    event_id      CHAR(36)     CHARACTER SET ascii NOT NULL,
    job_id        CHAR(36)     CHARACTER SET ascii NOT NULL,
    routing_key   VARCHAR(64)  CHARACTER SET ascii NOT NULL,
    body          MEDIUMTEXT   NOT NULL,
    created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    sent_at       DATETIME(6)  NULL,
    publish_attempts INT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (id),
    UNIQUE KEY uq_outbox_event (event_id),
    KEY ix_outbox_unsent (sent_at, id),
    KEY ix_outbox_job (job_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The stable contract for anyone who reads job status from the database (see README).
CREATE VIEW job_status AS
SELECT
    j.id            AS job_id,
    j.order_id      AS order_id,
    j.project_id    AS project_id,
    j.state         AS state,
    j.step          AS step,
    j.attempts      AS attempts,
    j.error_class   AS error_class,
    j.error_message AS error_message,
    j.server_id     AS server_id,
    j.port_id       AS port_id,
    j.volume_id     AS volume_id,
    j.created_at    AS created_at,
    j.updated_at    AS updated_at,
    j.finished_at   AS finished_at
FROM jobs j;
