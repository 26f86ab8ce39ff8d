-- openstack-provisioner: a read-only MySQL user for teams that read job status from the database.
--
-- It may SELECT the `job_status` and `service_status` views and nothing else (not the jobs table,
-- not the orders in it, not the history, not the outbox). The views must exist, so run this AFTER the worker (or
-- `provisioner migrate`) has migrated the database:
--   { echo "SET @status_password='...';"; cat deploy/mysql/02-status-reader.sql; } | mysql -uroot -p
-- Optional variables (defaults in brackets): @db [provisioner], @status_user
-- [provisioner_status], @status_host [%], @status_password [change-me-status: set a real one].
-- Point readers at a replica when you have one: the view is an ordinary SELECT.

SET @db = COALESCE(@db, 'provisioner');
SET @status_user = COALESCE(@status_user, 'provisioner_status');
SET @status_host = COALESCE(@status_host, '%');
SET @status_password = COALESCE(@status_password, 'change-me-status');

SET @sql = CONCAT('CREATE USER IF NOT EXISTS ', QUOTE(@status_user), '@', QUOTE(@status_host),
                  ' IDENTIFIED BY ', QUOTE(@status_password));
PREPARE stmt FROM @sql; EXECUTE stmt; DEALLOCATE PREPARE stmt;

SET @sql = CONCAT('GRANT SELECT ON `', REPLACE(@db, '`', ''), '`.`job_status` TO ',
                  QUOTE(@status_user), '@', QUOTE(@status_host));
PREPARE stmt FROM @sql; EXECUTE stmt; DEALLOCATE PREPARE stmt;

SET @sql = CONCAT('GRANT SELECT ON `', REPLACE(@db, '`', ''), '`.`service_status` TO ',
                  QUOTE(@status_user), '@', QUOTE(@status_host));
PREPARE stmt FROM @sql; EXECUTE stmt; DEALLOCATE PREPARE stmt;
