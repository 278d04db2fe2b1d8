-- Remote registries and replication. A replication run is a job; its
-- tasks (one per artifact) say what is done, so a run taken over by
-- another replica skips it.
CREATE TABLE registries (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(191) NOT NULL UNIQUE,
    kind MEDIUMTEXT NOT NULL,
    url MEDIUMTEXT NOT NULL,
    description MEDIUMTEXT NOT NULL,
    access_key MEDIUMTEXT NOT NULL,
    -- Sealed with the configured secret key; never the password itself.
    access_secret MEDIUMTEXT,
    insecure BIGINT NOT NULL,
    ca_cert MEDIUMTEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE replication_policies (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(191) NOT NULL UNIQUE,
    -- NULL: this berth.
    src_registry_id BIGINT REFERENCES registries (id),
    dest_registry_id BIGINT REFERENCES registries (id),
    enabled BIGINT NOT NULL,
    -- JSON: filters, trigger, namespace rewriting, deletion, speed, retries.
    spec MEDIUMTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE replication_tasks (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    execution_id BIGINT NOT NULL,
    operation VARCHAR(16) NOT NULL,
    src_resource VARCHAR(600) NOT NULL,
    dst_resource MEDIUMTEXT NOT NULL,
    digest MEDIUMTEXT,
    status MEDIUMTEXT NOT NULL,
    attempts BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    message MEDIUMTEXT NOT NULL,
    log MEDIUMTEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    UNIQUE (execution_id, operation, src_resource)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
