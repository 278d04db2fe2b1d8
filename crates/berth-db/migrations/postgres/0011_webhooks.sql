-- Webhook policies of projects. A delivery is a job of kind `webhook`
-- (retries, backoff, lease and log come with it); its arguments begin with
-- the policy's id so that a policy's deliveries can be listed.
CREATE TABLE webhook_policies (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    -- JSON: event types and targets; targets' secrets sealed.
    spec TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
