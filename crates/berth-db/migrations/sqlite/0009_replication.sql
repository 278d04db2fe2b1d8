-- Remote registries and replication. A replication run is a job; its
-- tasks (one per artifact) say what is done, so a run taken over by
-- another replica skips it.
CREATE TABLE registries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    access_key TEXT NOT NULL,
    -- Sealed with the configured secret key; never the password itself.
    access_secret TEXT,
    insecure BIGINT NOT NULL,
    ca_cert TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE replication_policies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    -- NULL: this berth.
    src_registry_id BIGINT REFERENCES registries (id),
    dest_registry_id BIGINT REFERENCES registries (id),
    enabled BIGINT NOT NULL,
    -- JSON: filters, trigger, namespace rewriting, deletion, speed, retries.
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE replication_tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id BIGINT NOT NULL,
    operation TEXT NOT NULL,
    src_resource TEXT NOT NULL,
    dst_resource TEXT NOT NULL,
    digest TEXT,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    message TEXT NOT NULL,
    log TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    UNIQUE (execution_id, operation, src_resource)
);
