-- Guard rails per project: tag immutability rules, quotas, retention
-- policies; and schedules that start jobs at cron times.
CREATE TABLE immutable_rules (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    repo_pattern VARCHAR(255) NOT NULL,
    -- 1: the rule covers repositories the pattern does not match.
    repo_exclude BIGINT NOT NULL,
    tag_pattern VARCHAR(255) NOT NULL,
    tag_exclude BIGINT NOT NULL,
    disabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX immutable_rules_project ON immutable_rules (project_id);

-- -1: no limit.
ALTER TABLE projects ADD COLUMN storage_limit BIGINT NOT NULL DEFAULT -1;
ALTER TABLE projects ADD COLUMN count_limit BIGINT NOT NULL DEFAULT -1;

CREATE TABLE retention_policies (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    project_id BIGINT NOT NULL UNIQUE REFERENCES projects (id) ON DELETE CASCADE,
    -- JSON: the rules, in Harbor's shape.
    rules MEDIUMTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE schedules (
    name VARCHAR(191) PRIMARY KEY,
    kind VARCHAR(64) NOT NULL,
    args MEDIUMTEXT NOT NULL,
    cron VARCHAR(255) NOT NULL,
    next_run_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
