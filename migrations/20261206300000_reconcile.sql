-- The reconciler (issue 13): what it found in the cloud that the database does not account for
-- (orphans), and services whose cloud resources are not as recorded (drift); and the lease
-- that lets one worker at a time run a pass.

CREATE TABLE reconcile_findings (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    -- orphan | drift
    kind            VARCHAR(16)  CHARACTER SET ascii NOT NULL,
    -- server | port | volume
    resource_type   VARCHAR(16)  CHARACTER SET ascii NOT NULL,
    resource_id     VARCHAR(64)  NOT NULL,
    project_id      VARCHAR(64)  NOT NULL,
    -- The job whose mark the resource carries (orphans; NULL when the mark names no job), or the
    -- create job of the drifted service.
    job_id          VARCHAR(64)  CHARACTER SET ascii NULL,
    -- Drift: the service (its create order's id).
    target_order_id VARCHAR(128) NULL,
    -- Drift: server_missing | server_error | server_state | volume_missing | volume_detached;
    -- orphan: job_missing | job_final.
    reason          VARCHAR(32)  CHARACTER SET ascii NOT NULL,
    expected        VARCHAR(255) NULL,
    found           VARCHAR(255) NULL,
    -- reported | deleting | deleted | delete_failed | event (drift: the event was written)
    action          VARCHAR(16)  CHARACTER SET ascii NOT NULL,
    -- The last delete error, when a delete failed.
    action_error    TEXT         NULL,
    -- Drift: the `service.drift` event written with the finding.
    event_id        CHAR(36)     CHARACTER SET ascii NULL,
    first_seen_at   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_seen_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    action_at       DATETIME(6)  NULL,
    cleared_at      DATETIME(6)  NULL,
    -- 1 while open, NULL once cleared: at most one open finding per resource and reason (NULLs
    -- never collide in a unique key), any number of cleared ones as history.
    is_open         TINYINT(1)   NULL DEFAULT 1,
    PRIMARY KEY (id),
    UNIQUE KEY uq_findings_open (kind, resource_type, resource_id, reason, is_open),
    KEY ix_findings_project (project_id, is_open),
    KEY ix_findings_seen (first_seen_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row: who runs the reconciler until when. `fence` grows with every take-over and is checked
-- by every write of a pass, so a worker that lost the lease can no longer record or delete.
CREATE TABLE reconcile_lease (
    name             VARCHAR(32)  CHARACTER SET ascii NOT NULL,
    owner            VARCHAR(128) NULL,
    expires_at       DATETIME(6)  NULL,
    fence            BIGINT UNSIGNED NOT NULL DEFAULT 0,
    last_started_at  DATETIME(6)  NULL,
    last_finished_at DATETIME(6)  NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO reconcile_lease (name) VALUES ('reconciler');
