-- Guard rails per project: tag immutability rules, quotas, retention
-- policies; and schedules that start jobs at cron times.
CREATE TABLE immutable_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    repo_pattern TEXT NOT NULL,
    -- 1: the rule covers repositories the pattern does not match.
    repo_exclude BIGINT NOT NULL,
    tag_pattern TEXT NOT NULL,
    tag_exclude BIGINT NOT NULL,
    disabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX immutable_rules_project ON immutable_rules (project_id);

-- -1: no limit.
ALTER TABLE projects ADD COLUMN storage_limit BIGINT NOT NULL DEFAULT -1;
ALTER TABLE projects ADD COLUMN count_limit BIGINT NOT NULL DEFAULT -1;

CREATE TABLE retention_policies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL UNIQUE REFERENCES projects (id) ON DELETE CASCADE,
    -- JSON: the rules, in Harbor's shape.
    rules TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    args TEXT NOT NULL,
    cron TEXT NOT NULL,
    next_run_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
