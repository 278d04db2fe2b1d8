-- A project with a registry is a proxy cache of that registry: pulls of
-- what it lacks are fetched from there, pushes are refused.
ALTER TABLE projects ADD COLUMN registry_id BIGINT;
