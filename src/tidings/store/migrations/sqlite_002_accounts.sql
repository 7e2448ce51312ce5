-- Tidings SQLite schema, version 2: accounts an operator can disable.
--
-- A disabled account cannot log in and has no live device tokens (disabling
-- revokes them in the same transaction); NULL means enabled.
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
