-- Webhook policies of projects. A delivery is a job of kind `webhook`
-- (retries, backoff, lease and log come with it); its arguments begin with
-- the policy's id so that a policy's deliveries can be listed.
CREATE TABLE webhook_policies (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    project_id BIGINT NOT NULL,
    name VARCHAR(191) NOT NULL,
    enabled BIGINT NOT NULL,
    -- JSON: event types and targets; targets' secrets sealed.
    spec MEDIUMTEXT NOT NULL,
    creator MEDIUMTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
