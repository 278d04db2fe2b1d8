-- Online garbage collection. Every stored object (blob or manifest) has a
-- row in blobs; touched_at is when a push last made it or depended on it.
-- Collection removes only rows nothing references and nobody touched within
-- the safety window, and removes the bytes after the row.
ALTER TABLE blobs ADD COLUMN touched_at BIGINT NOT NULL DEFAULT 0;
UPDATE blobs SET touched_at = created_at;
INSERT INTO blobs (digest, size, created_at, touched_at)
    SELECT digest, MAX(size), MIN(pushed_at), MAX(pushed_at) FROM manifests
    WHERE digest NOT IN (SELECT digest FROM blobs) GROUP BY digest;
CREATE INDEX blobs_touched ON blobs (touched_at);
CREATE INDEX manifest_references_any_target ON manifest_references (target_digest);
CREATE INDEX manifests_digest ON manifests (digest);
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

-- Background jobs: any replica may run any job; a lease says which one does.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    args TEXT NOT NULL,
    -- While a job is pending or running, no second job with its key is added.
    dedup_key TEXT UNIQUE,
    status TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    progress TEXT,
    log TEXT NOT NULL DEFAULT '',
    error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_kind ON jobs (kind, id);
