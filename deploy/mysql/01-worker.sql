-- openstack-provisioner: the database and the worker's MySQL user (MySQL 8.0+ / MariaDB 10.6+).
--
-- Run as an administrator BEFORE the first worker starts:
--   { echo "SET @worker_password='...';"; cat deploy/mysql/01-worker.sql; } | mysql -uroot -p
-- Optional variables (defaults in brackets): @db [provisioner], @worker_user [provisioner],
-- @worker_host [%], @worker_password [change-me-worker: set a real one].
--
-- The worker owns its schema: it applies the migrations at startup (CREATE, ALTER, INDEX, DROP,
-- CREATE VIEW for job_status) and reads and writes its three tables. It has no privilege outside
-- its database and none that administers the server.

SET @db = COALESCE(@db, 'provisioner');
SET @worker_user = COALESCE(@worker_user, 'provisioner');
SET @worker_host = COALESCE(@worker_host, '%');
SET @worker_password = COALESCE(@worker_password, 'change-me-worker');

SET @sql = CONCAT('CREATE DATABASE IF NOT EXISTS `', REPLACE(@db, '`', ''), '` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin');
PREPARE stmt FROM @sql; EXECUTE stmt; DEALLOCATE PREPARE stmt;

SET @sql = CONCAT('CREATE USER IF NOT EXISTS ', QUOTE(@worker_user), '@', QUOTE(@worker_host),
                  ' IDENTIFIED BY ', QUOTE(@worker_password));
PREPARE stmt FROM @sql; EXECUTE stmt; DEALLOCATE PREPARE stmt;

SET @sql = CONCAT('GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, CREATE VIEW, SHOW VIEW, ',
                  'REFERENCES ON `', REPLACE(@db, '`', ''), '`.* TO ', QUOTE(@worker_user), '@', QUOTE(@worker_host));
PREPARE stmt FROM @sql; EXECUTE stmt; DEALLOCATE PREPARE stmt;
