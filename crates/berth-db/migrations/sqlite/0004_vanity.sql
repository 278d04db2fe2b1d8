-- Go vanity import paths managed through the API, each owned by a project.
CREATE TABLE vanity_paths (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    repo TEXT NOT NULL,
    vcs TEXT NOT NULL,
    display TEXT NOT NULL,
    subdirectory TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
