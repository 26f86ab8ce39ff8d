-- Regions (issue 15): a create order may name a region of the cloud's catalog (`region`); the
-- service lives there, and its later actions (suspend, unsuspend, resize, terminate, a tenant
-- close's terminates) go there. NULL: the configured region (every service made before this).
ALTER TABLE services
    ADD COLUMN region VARCHAR(255) NULL AFTER tenant_ref;

-- service_status gains the region, last (additive: the columns before it, boot_volume_id of
-- 20261207400000 included, are unchanged).
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
    s.boot_volume_id                     AS boot_volume_id,
    s.region                             AS region
FROM services s LEFT JOIN jobs c ON c.id = s.create_job_id;
