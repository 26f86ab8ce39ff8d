-- Boot from volume (order server.boot_volume): the volume Nova made from the image for the
-- service's root disk. Nova does not mark it with the job, so the create records its id once the
-- server is up, and terminate reads it here (Nova deletes it with the server, or it is kept).
ALTER TABLE services
    ADD COLUMN boot_volume_id VARCHAR(64) NULL AFTER volume_id;

-- service_status gains boot_volume_id, last (additive); volume_id stays the data volume's.
CREATE OR REPLACE VIEW service_status AS
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
    s.created_at                         AS created_at,
    s.boot_volume_id                     AS boot_volume_id
FROM services s LEFT JOIN jobs c ON c.id = s.create_job_id;
