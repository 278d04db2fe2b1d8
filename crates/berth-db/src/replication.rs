//! Remote registries, replication policies, and the tasks of replication
//! runs (one row per artifact copied or deleted). A run itself is a job
//! (`jobs` table); its tasks say which artifacts are done, so a run taken
//! over after a replica died skips them.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{now_ms, opt_string, text, Db, DbError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct RegistryRow {
    pub id: i64,
    pub name: String,
    /// `harbor` or `docker-registry`.
    pub kind: String,
    pub url: String,
    pub description: String,
    pub access_key: String,
    /// Sealed (see berth-core's `sealed`); None: no password.
    pub access_secret: Option<String>,
    pub insecure: bool,
    /// PEM of a CA to trust for this registry besides the system's.
    pub ca_cert: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRow {
    pub id: i64,
    pub name: String,
    /// None: this berth.
    pub src_registry_id: Option<i64>,
    pub dest_registry_id: Option<i64>,
    pub enabled: bool,
    /// JSON: everything else, in Harbor's shape.
    pub spec: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    pub id: i64,
    pub execution_id: i64,
    /// `copy` or `deletion`.
    pub operation: String,
    pub src_resource: String,
    pub dst_resource: String,
    pub digest: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub bytes: i64,
    pub message: String,
    pub log: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// Task statuses.
pub const TASK_RUNNING: &str = "running";
pub const TASK_SUCCEEDED: &str = "succeeded";
pub const TASK_FAILED: &str = "failed";
/// Nothing to do: the destination already had it, or `override` is off.
pub const TASK_SKIPPED: &str = "skipped";

const REGISTRY_COLS: &str =
    "id, name, kind, url, description, access_key, access_secret, insecure, ca_cert, created_at, updated_at";
const POLICY_COLS: &str = "id, name, src_registry_id, dest_registry_id, enabled, spec, created_at, updated_at";
const TASK_COLS: &str = "id, execution_id, operation, src_resource, dst_resource, digest, status, attempts, bytes, \
                         message, log, started_at, finished_at";

fn registry_row(r: &AnyRow) -> Result<RegistryRow> {
    Ok(RegistryRow {
        id: r.try_get("id")?,
        name: text(r, "name")?,
        kind: text(r, "kind")?,
        url: text(r, "url")?,
        description: text(r, "description")?,
        access_key: text(r, "access_key")?,
        access_secret: opt_string(r, "access_secret")?,
        insecure: r.try_get::<i64, _>("insecure")? != 0,
        ca_cert: opt_string(r, "ca_cert")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn policy_row(r: &AnyRow) -> Result<PolicyRow> {
    Ok(PolicyRow {
        id: r.try_get("id")?,
        name: text(r, "name")?,
        src_registry_id: r.try_get("src_registry_id")?,
        dest_registry_id: r.try_get("dest_registry_id")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        spec: text(r, "spec")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn task_row(r: &AnyRow) -> Result<TaskRow> {
    Ok(TaskRow {
        id: r.try_get("id")?,
        execution_id: r.try_get("execution_id")?,
        operation: text(r, "operation")?,
        src_resource: text(r, "src_resource")?,
        dst_resource: text(r, "dst_resource")?,
        digest: opt_string(r, "digest")?,
        status: text(r, "status")?,
        attempts: r.try_get("attempts")?,
        bytes: r.try_get("bytes")?,
        message: text(r, "message")?,
        log: text(r, "log")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// A unique name already taken becomes [`DbError::Conflict`].
fn name_conflict(e: sqlx::Error, what: &str) -> DbError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => DbError::Conflict(format!("{what} already exists")),
        _ => e.into(),
    }
}

impl Db {
    // ---- registries ----

    pub async fn create_registry(&self, r: &RegistryRow) -> Result<i64> {
        let now = now_ms();
        let sql = self.returning_id(
            "INSERT INTO registries (name, kind, url, description, access_key, access_secret, insecure, ca_cert, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        let q = sqlx::query(&sql)
            .bind(&r.name)
            .bind(&r.kind)
            .bind(&r.url)
            .bind(&r.description)
            .bind(&r.access_key)
            .bind(&r.access_secret)
            .bind(i64::from(r.insecure))
            .bind(&r.ca_cert)
            .bind(now)
            .bind(now);
        self.insert_id(q).await.map_err(|e| match e {
            DbError::Sqlx(e) => name_conflict(e, &format!("a registry named {:?}", r.name)),
            e => e,
        })
    }

    /// Replaces everything but the id and creation time; false if there is no such registry.
    pub async fn update_registry(&self, r: &RegistryRow) -> Result<bool> {
        let done = sqlx::query(&self.q(
            "UPDATE registries SET name = ?, kind = ?, url = ?, description = ?, access_key = ?, access_secret = ?, \
             insecure = ?, ca_cert = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(&r.name)
        .bind(&r.kind)
        .bind(&r.url)
        .bind(&r.description)
        .bind(&r.access_key)
        .bind(&r.access_secret)
        .bind(i64::from(r.insecure))
        .bind(&r.ca_cert)
        .bind(now_ms())
        .bind(r.id)
        .execute(&self.pool)
        .await
        .map_err(|e| name_conflict(e, &format!("a registry named {:?}", r.name)))?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn registry(&self, id: i64) -> Result<Option<RegistryRow>> {
        let row = sqlx::query(&self.q(&format!("SELECT {REGISTRY_COLS} FROM registries WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(registry_row).transpose()
    }

    pub async fn registries(&self) -> Result<Vec<RegistryRow>> {
        let rows = sqlx::query(&format!("SELECT {REGISTRY_COLS} FROM registries ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(registry_row).collect()
    }

    /// Refuses (Conflict) while a policy uses the registry.
    pub async fn delete_registry(&self, id: i64) -> Result<bool> {
        let used: i64 = sqlx::query(
            &self.q("SELECT COUNT(*) FROM replication_policies WHERE src_registry_id = ? OR dest_registry_id = ?"),
        )
        .bind(id)
        .bind(id)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        if used > 0 {
            return Err(DbError::Conflict(format!(
                "{used} replication policies use this registry; delete them first"
            )));
        }
        let proxies: i64 = sqlx::query(&self.q("SELECT COUNT(*) FROM projects WHERE registry_id = ?"))
            .bind(id)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        if proxies > 0 {
            return Err(DbError::Conflict(format!(
                "{proxies} proxy cache projects use this registry; delete them first"
            )));
        }
        let r = sqlx::query(&self.q("DELETE FROM registries WHERE id = ?"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- policies ----

    pub async fn create_policy(&self, p: &PolicyRow) -> Result<i64> {
        let now = now_ms();
        let sql = self.returning_id(
            "INSERT INTO replication_policies (name, src_registry_id, dest_registry_id, enabled, spec, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        );
        let q = sqlx::query(&sql)
            .bind(&p.name)
            .bind(p.src_registry_id)
            .bind(p.dest_registry_id)
            .bind(i64::from(p.enabled))
            .bind(&p.spec)
            .bind(now)
            .bind(now);
        self.insert_id(q).await.map_err(|e| match e {
            DbError::Sqlx(e) => name_conflict(e, &format!("a policy named {:?}", p.name)),
            e => e,
        })
    }

    pub async fn update_policy(&self, p: &PolicyRow) -> Result<bool> {
        let r = sqlx::query(&self.q(
            "UPDATE replication_policies SET name = ?, src_registry_id = ?, dest_registry_id = ?, enabled = ?, \
             spec = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(&p.name)
        .bind(p.src_registry_id)
        .bind(p.dest_registry_id)
        .bind(i64::from(p.enabled))
        .bind(&p.spec)
        .bind(now_ms())
        .bind(p.id)
        .execute(&self.pool)
        .await
        .map_err(|e| name_conflict(e, &format!("a policy named {:?}", p.name)))?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn policy(&self, id: i64) -> Result<Option<PolicyRow>> {
        let row = sqlx::query(&self.q(&format!("SELECT {POLICY_COLS} FROM replication_policies WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(policy_row).transpose()
    }

    pub async fn policies(&self) -> Result<Vec<PolicyRow>> {
        let rows = sqlx::query(&format!("SELECT {POLICY_COLS} FROM replication_policies ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(policy_row).collect()
    }

    pub async fn delete_policy(&self, id: i64) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM replication_policies WHERE id = ?"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- tasks ----

    /// The task of `src_resource` in a run, started now (or started again:
    /// its attempts count up). Returns it as it now stands.
    pub async fn start_task(
        &self,
        execution_id: i64,
        operation: &str,
        src_resource: &str,
        dst_resource: &str,
    ) -> Result<TaskRow> {
        let now = now_ms();
        let sql = self.dialect.upsert(
            "replication_tasks",
            "execution_id, operation, src_resource, dst_resource, status, attempts, bytes, message, log, started_at",
            "execution_id, operation, src_resource",
            &["status", "started_at"],
        );
        sqlx::query(&self.q(&sql))
            .bind(execution_id)
            .bind(operation)
            .bind(src_resource)
            .bind(dst_resource)
            .bind(TASK_RUNNING)
            .bind(0i64)
            .bind(0i64)
            .bind("")
            .bind("")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(&self.q(
            "UPDATE replication_tasks SET attempts = attempts + 1, finished_at = NULL \
             WHERE execution_id = ? AND operation = ? AND src_resource = ?",
        ))
        .bind(execution_id)
        .bind(operation)
        .bind(src_resource)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&self.q(&format!(
            "SELECT {TASK_COLS} FROM replication_tasks WHERE execution_id = ? AND operation = ? AND src_resource = ?"
        )))
        .bind(execution_id)
        .bind(operation)
        .bind(src_resource)
        .fetch_one(&self.pool)
        .await?;
        task_row(&row)
    }

    /// Ends a task: its status, the digest and bytes it moved, a message.
    pub async fn finish_task(
        &self,
        id: i64,
        status: &str,
        digest: Option<&str>,
        bytes: i64,
        message: &str,
    ) -> Result<()> {
        sqlx::query(&self.q(
            "UPDATE replication_tasks SET status = ?, digest = COALESCE(?, digest), bytes = ?, message = ?, \
             finished_at = ? WHERE id = ?",
        ))
        .bind(status)
        .bind(digest)
        .bind(bytes)
        .bind(message)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn task_log(&self, id: i64, line: &str) -> Result<()> {
        let sql = format!(
            "UPDATE replication_tasks SET log = {} WHERE id = ?",
            self.dialect.concat("log", "?")
        );
        sqlx::query(&self.q(&sql))
            .bind(format!("{line}\n"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn tasks(&self, execution_id: i64) -> Result<Vec<TaskRow>> {
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {TASK_COLS} FROM replication_tasks WHERE execution_id = ? ORDER BY id"
        )))
        .bind(execution_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_row).collect()
    }

    pub async fn task(&self, execution_id: i64, id: i64) -> Result<Option<TaskRow>> {
        let row = sqlx::query(&self.q(&format!(
            "SELECT {TASK_COLS} FROM replication_tasks WHERE execution_id = ? AND id = ?"
        )))
        .bind(execution_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(task_row).transpose()
    }

    /// Tasks of a run by status: (total, succeeded, failed, running, skipped).
    pub async fn task_counts(&self, execution_id: i64) -> Result<TaskCounts> {
        let rows = sqlx::query(
            &self.q("SELECT status, COUNT(*) FROM replication_tasks WHERE execution_id = ? GROUP BY status"),
        )
        .bind(execution_id)
        .fetch_all(&self.pool)
        .await?;
        let mut c = TaskCounts::default();
        for r in &rows {
            let n: i64 = r.try_get(1)?;
            c.total += n;
            match text(r, "status")?.as_str() {
                TASK_SUCCEEDED => c.succeeded += n,
                TASK_FAILED => c.failed += n,
                TASK_SKIPPED => c.skipped += n,
                _ => c.running += n,
            }
        }
        Ok(c)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub running: i64,
    pub skipped: i64,
}
