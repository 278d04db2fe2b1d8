-- Go vanity import paths managed through the API, each owned by a project.
CREATE TABLE vanity_paths (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    project_id BIGINT NOT NULL,
    path VARCHAR(512) NOT NULL UNIQUE,
    repo MEDIUMTEXT NOT NULL,
    vcs VARCHAR(16) NOT NULL,
    display MEDIUMTEXT NOT NULL,
    subdirectory MEDIUMTEXT NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
