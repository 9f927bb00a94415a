-- Run by mariadbd at every start (--init-file), before it takes connections: idempotent.
-- The app's account may only read and write the rows of its own database; administration
-- goes through the Unix socket in the instance folder, as the role's OS user (unix_socket).
CREATE DATABASE IF NOT EXISTS lamp;
CREATE USER IF NOT EXISTS 'lamp'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON lamp.* TO 'lamp'@'%';
CREATE TABLE IF NOT EXISTS lamp.hits (
  id TINYINT UNSIGNED PRIMARY KEY,
  n BIGINT UNSIGNED NOT NULL
) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS lamp.notes (
  k VARCHAR(64) PRIMARY KEY,
  v VARBINARY(4096) NOT NULL
) ENGINE = InnoDB;
