-- Operator console (issue 14): the audit log of what operators did in the web console, the
-- console's sessions (shared by every worker behind one address), and the indexes that keep its
-- pages fast with millions of jobs.

-- Every operator action (replay, cancel, bulk replay) and every login, done or refused.
CREATE TABLE ui_audit (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    at          DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    -- The operator's name (from PROVISIONER_UI_USERS) and role at the time.
    operator    VARCHAR(128) NOT NULL,
    role        VARCHAR(16)  CHARACTER SET ascii NOT NULL,
    -- login | login_failed | logout | replay | cancel | replay_failed
    action      VARCHAR(32)  CHARACTER SET ascii NOT NULL,
    -- The job id, or the bulk selection (class and since) it acted on.
    target      VARCHAR(255) NULL,
    -- replayed | cancelled | cancel_requested | refused | not_found | ok | ...
    outcome     VARCHAR(32)  CHARACTER SET ascii NOT NULL,
    detail      TEXT         NULL,
    -- The client's address as the worker saw it, and X-Forwarded-For if a proxy set one.
    remote      VARCHAR(255) NULL,
    PRIMARY KEY (id),
    KEY ix_ui_audit_at (at),
    KEY ix_ui_audit_operator (operator, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Console sessions: the SHA-256 of the cookie's token (the token itself is never stored), the
-- operator, and the CSRF token every form of the session carries.
CREATE TABLE ui_sessions (
    token_sha256 CHAR(64)     CHARACTER SET ascii NOT NULL,
    operator     VARCHAR(128) NOT NULL,
    csrf         CHAR(43)     CHARACTER SET ascii NOT NULL,
    created_at   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at   DATETIME(6)  NOT NULL,
    PRIMARY KEY (token_sha256),
    KEY ix_ui_sessions_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Lists filtered by state, action, project or error class, newest first: one index range each
-- (InnoDB appends the primary key, so (x, created_at) also orders by (created_at, id)).
-- Finished jobs by time (the dashboard's failures by class and throughput), covering.
-- Search by server id.
ALTER TABLE jobs
    ADD KEY ix_jobs_state_created (state, created_at),
    ADD KEY ix_jobs_action_created (action, created_at),
    ADD KEY ix_jobs_project_created (project_id, created_at),
    ADD KEY ix_jobs_class_created (error_class, created_at),
    ADD KEY ix_jobs_finished (finished_at, state, error_class),
    ADD KEY ix_jobs_server (server_id);

-- Workers seen: the actors of recent transitions.
ALTER TABLE job_history ADD KEY ix_history_at (at, actor);
