-- When each manifest was last pulled (GET), for the portal, the API's
-- pull_time, and retention rules that keep what is in use.
ALTER TABLE manifests ADD COLUMN pulled_at BIGINT;
