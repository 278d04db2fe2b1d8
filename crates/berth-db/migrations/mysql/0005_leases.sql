-- Leases: which replica runs a background job for now.
CREATE TABLE leases (
    name VARCHAR(191) PRIMARY KEY,
    holder VARCHAR(191) NOT NULL,
    expires_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
