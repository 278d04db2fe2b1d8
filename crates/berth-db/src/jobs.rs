//! Background jobs, stored so that any replica can run any job, once.
//!
//! A job is pending until a replica claims it: the claim is a conditional
//! UPDATE that only one claimant can win, and it comes with a lease that the
//! runner renews. A runner that dies lets its lease run out, and the job is
//! claimed again (its attempts count up to `max_attempts`). While a job is
//! pending or running, its `dedup_key` keeps a second one of the same key
//! from being added.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{now_ms, opt_string, text, Db, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    /// JSON.
    pub args: String,
    pub status: String,
    pub triggered_by: String,
    pub attempts: i64,
    pub max_attempts: i64,
    /// JSON, written by the runner as it goes.
    pub progress: Option<String>,
    pub log: String,
    pub error: Option<String>,
    pub created_at: i64,
    /// When a pending job is due (a retry waits).
    pub run_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Job statuses.
pub const PENDING: &str = "pending";
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
/// Stopped by an operator before it ended.
pub const STOPPED: &str = "stopped";

const COLS: &str = "id, kind, args, status, triggered_by, attempts, max_attempts, progress, log, error, \
                    created_at, run_at, started_at, finished_at";

fn job_row(r: &AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        id: r.try_get("id")?,
        kind: text(r, "kind")?,
        args: text(r, "args")?,
        status: text(r, "status")?,
        triggered_by: text(r, "triggered_by")?,
        attempts: r.try_get("attempts")?,
        max_attempts: r.try_get("max_attempts")?,
        progress: opt_string(r, "progress")?,
        log: opt_string(r, "log")?.unwrap_or_default(),
        error: opt_string(r, "error")?,
        created_at: r.try_get("created_at")?,
        run_at: r.try_get("run_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl Db {
    /// Adds a pending job. With a `dedup_key` that a pending or running job
    /// already holds, adds nothing and returns that job's id.
    pub async fn enqueue_job(
        &self,
        kind: &str,
        args: &str,
        dedup_key: Option<&str>,
        triggered_by: &str,
        max_attempts: i64,
    ) -> Result<(i64, bool)> {
        if let Some(key) = dedup_key {
            if let Some(id) = self.job_with_key(key).await? {
                return Ok((id, false));
            }
        }
        let now = now_ms();
        let mut sql = "INSERT INTO jobs (kind, args, dedup_key, status, triggered_by, attempts, max_attempts, run_at, \
                       lease_until, log, created_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, 0, '', ?)"
            .to_string();
        // RETURNING where the database has it; MySQL reports the id instead.
        let returning = self.dialect != crate::Dialect::Mysql;
        if returning {
            sql.push_str(" RETURNING id");
        }
        let sql = self.q(&sql).into_owned();
        let q = sqlx::query(&sql)
            .bind(kind)
            .bind(args)
            .bind(dedup_key)
            .bind(PENDING)
            .bind(triggered_by)
            .bind(max_attempts)
            .bind(now)
            .bind(now);
        let id = if returning {
            q.fetch_one(&self.pool).await.map(|r| r.try_get::<i64, _>(0))
        } else {
            q.execute(&self.pool).await.map(|r| {
                r.last_insert_id()
                    .ok_or_else(|| sqlx::Error::Protocol("no id for the new job".into()))
            })
        };
        match id {
            Ok(id) => Ok((id?, true)),
            // Another replica added the same key first.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => match dedup_key {
                Some(key) => match self.job_with_key(key).await? {
                    Some(id) => Ok((id, false)),
                    None => Err(sqlx::Error::Database(e).into()),
                },
                None => Err(sqlx::Error::Database(e).into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn job_with_key(&self, key: &str) -> Result<Option<i64>> {
        let row = sqlx::query(&self.q("SELECT id FROM jobs WHERE dedup_key = ?"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }

    /// Claims the oldest due job of one of `kinds` for `owner`, until
    /// `lease_ms` from now: a pending one, or a running one whose runner's
    /// lease ran out. None if there is nothing to do.
    pub async fn claim_job(&self, kinds: &[&str], owner: &str, lease_ms: i64) -> Result<Option<JobRow>> {
        let now = now_ms();
        for kind in kinds {
            let candidates = sqlx::query(&self.q(
                "SELECT id FROM jobs WHERE kind = ? AND ((status = ? AND run_at <= ?) OR (status = ? AND lease_until < ?)) \
                 ORDER BY id LIMIT 5",
            ))
            .bind(*kind)
            .bind(PENDING)
            .bind(now)
            .bind(RUNNING)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            for c in candidates {
                let id: i64 = c.try_get(0)?;
                let won = sqlx::query(&self.q(
                    "UPDATE jobs SET status = ?, lease_owner = ?, lease_until = ?, attempts = attempts + 1, \
                     started_at = COALESCE(started_at, ?) \
                     WHERE id = ? AND ((status = ? AND run_at <= ?) OR (status = ? AND lease_until < ?))",
                ))
                .bind(RUNNING)
                .bind(owner)
                .bind(now + lease_ms)
                .bind(now)
                .bind(id)
                .bind(PENDING)
                .bind(now)
                .bind(RUNNING)
                .bind(now)
                .execute(&self.pool)
                .await?;
                if won.rows_affected() == 1 {
                    return self.job(id).await;
                }
            }
        }
        Ok(None)
    }

    /// Renews the runner's lease and records progress (JSON). False if the
    /// job is no longer this owner's: the runner must stop.
    pub async fn job_heartbeat(&self, id: i64, owner: &str, lease_ms: i64, progress: Option<&str>) -> Result<bool> {
        let r = sqlx::query(
            &self.q("UPDATE jobs SET lease_until = ?, progress = COALESCE(?, progress) \
             WHERE id = ? AND lease_owner = ? AND status = ?"),
        )
        .bind(now_ms() + lease_ms)
        .bind(progress)
        .bind(id)
        .bind(owner)
        .bind(RUNNING)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Appends lines to a job's log.
    pub async fn job_log(&self, id: i64, line: &str) -> Result<()> {
        let sql = format!("UPDATE jobs SET log = {} WHERE id = ?", self.dialect.concat("log", "?"));
        sqlx::query(&self.q(&sql))
            .bind(format!("{line}\n"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a run: succeeded, or failed. A failure with attempts left goes
    /// back to pending after `retry_in_ms`, doubled for each attempt already
    /// made (at most an hour); otherwise the job is finished and its key freed.
    pub async fn finish_job(
        &self,
        id: i64,
        owner: &str,
        outcome: std::result::Result<&str, &str>,
        retry_in_ms: i64,
    ) -> Result<()> {
        let now = now_ms();
        let job = self.job(id).await?;
        let retry = outcome.is_err() && job.as_ref().is_some_and(|j| j.attempts < j.max_attempts);
        let (status, progress, error) = match outcome {
            Ok(p) => (SUCCEEDED, Some(p), None),
            Err(e) => (if retry { PENDING } else { FAILED }, None, Some(e)),
        };
        let finished = (!retry).then_some(now);
        let attempts = job.as_ref().map_or(1, |j| j.attempts.clamp(1, 20));
        let delay = (retry_in_ms.saturating_mul(1 << (attempts - 1))).min(3_600_000);
        sqlx::query(&self.q(
            "UPDATE jobs SET status = ?, progress = COALESCE(?, progress), error = ?, finished_at = ?, \
             run_at = ?, lease_owner = NULL, lease_until = 0, \
             dedup_key = CASE WHEN ? = 1 THEN dedup_key ELSE NULL END \
             WHERE id = ? AND lease_owner = ? AND status = ?",
        ))
        .bind(status)
        .bind(progress)
        .bind(error)
        .bind(finished)
        .bind(now + delay)
        .bind(i64::from(retry))
        .bind(id)
        .bind(owner)
        .bind(RUNNING)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stops a pending or running job: it is not claimed again, and its
    /// runner's next heartbeat fails, which ends the run. False if it had
    /// already ended.
    pub async fn stop_job(&self, id: i64) -> Result<bool> {
        let r = sqlx::query(&self.q(
            "UPDATE jobs SET status = ?, finished_at = ?, dedup_key = NULL, error = ? \
             WHERE id = ? AND (status = ? OR status = ?)",
        ))
        .bind(STOPPED)
        .bind(now_ms())
        .bind("stopped by an operator")
        .bind(id)
        .bind(PENDING)
        .bind(RUNNING)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Makes a pending job (one waiting to be retried) due now. False if
    /// it is not pending.
    pub async fn run_job_now(&self, id: i64) -> Result<bool> {
        let r = sqlx::query(&self.q("UPDATE jobs SET run_at = ? WHERE id = ? AND status = ?"))
            .bind(now_ms())
            .bind(id)
            .bind(PENDING)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        let row = sqlx::query(&self.q(&format!("SELECT {COLS} FROM jobs WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_row).transpose()
    }

    /// Jobs of a kind, newest first, with the total.
    pub async fn jobs(&self, kind: &str, offset: i64, limit: i64) -> Result<(Vec<JobRow>, i64)> {
        self.jobs_with_args(kind, "", offset, limit).await
    }

    /// Jobs of a kind whose arguments begin with `args_prefix`, newest
    /// first, with the total.
    pub async fn jobs_with_args(
        &self,
        kind: &str,
        args_prefix: &str,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<JobRow>, i64)> {
        let pattern = format!("{}%", crate::like_escape(args_prefix));
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {COLS} FROM jobs WHERE kind = ? AND args LIKE ? ESCAPE '!' ORDER BY id DESC LIMIT ? OFFSET ?"
        )))
        .bind(kind)
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query(&self.q("SELECT COUNT(*) FROM jobs WHERE kind = ? AND args LIKE ? ESCAPE '!'"))
            .bind(kind)
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok((rows.iter().map(job_row).collect::<Result<_>>()?, total))
    }
}
