-- Tidings PostgreSQL schema, version 4: accounts an operator can disable.
--
-- A disabled account cannot log in and has no live device tokens (disabling
-- revokes them in the same transaction); NULL means enabled. Adding a
-- nullable column without a default rewrites nothing, so nodes of version 3
-- keep running beside this one during a rolling upgrade.
ALTER TABLE users ADD COLUMN disabled_at bigint;

