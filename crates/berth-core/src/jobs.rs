//! The job runner every replica starts: it claims due jobs from the
//! database, runs them with a lease it keeps renewing, and records progress,
//! log lines and the outcome where the API and the portal read them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cron::Cron;
use crate::gc::{GcOptions, GcReport};
use crate::registry::Registry;
use crate::{Error, Result};

/// The kind of a garbage collection job.
pub const GC: &str = "gc";
/// The kind of a retention run.
pub const RETENTION: &str = "retention";
/// The kind of a scrub (read back and re-hash everything stored).
pub const SCRUB: &str = "scrub";
/// The kind of a replication run.
pub const REPLICATION: &str = "replication";
const KINDS: [&str; 4] = [GC, RETENTION, SCRUB, REPLICATION];

/// A lease outlives a few missed heartbeats, no more.
const LEASE_MS: i64 = 30_000;
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Retention runs are retried once.
pub const RETENTION_ATTEMPTS: i64 = 2;
/// A replication run is tried three times; each try skips what the
/// previous ones finished.
pub const REPLICATION_ATTEMPTS: i64 = 3;
/// Garbage collection is retried once, a minute later.
pub const GC_ATTEMPTS: i64 = 2;
const RETRY_MS: i64 = 60_000;

/// What a garbage collection job is asked to do: Harbor's parameters, plus
/// the safety window.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct GcArgs {
    pub delete_untagged: bool,
    pub dry_run: bool,
    /// Seconds; absent: the configured default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_age_secs: Option<u64>,
}

/// What a retention run is asked to do.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct RetentionArgs {
    /// First, so that runs of one policy can be found by their arguments.
    pub policy_id: i64,
    pub dry_run: bool,
}

/// Adds a retention run of a policy (one pending or running per policy).
pub async fn enqueue_retention(db: &berth_db::Db, args: &RetentionArgs, triggered_by: &str) -> Result<(i64, bool)> {
    let json = serde_json::to_string(args).expect("arguments serialise");
    let key = format!("{RETENTION}-{}", args.policy_id);
    Ok(db
        .enqueue_job(RETENTION, &json, Some(&key), triggered_by, RETENTION_ATTEMPTS)
        .await?)
}

/// Adds a scrub (one pending or running at a time).
pub async fn enqueue_scrub(db: &berth_db::Db, triggered_by: &str) -> Result<(i64, bool)> {
    Ok(db.enqueue_job(SCRUB, "{}", Some(SCRUB), triggered_by, 1).await?)
}

/// Adds a garbage collection job (one pending or running at a time across
/// replicas). Returns its id, and whether it is new.
pub async fn enqueue_gc(db: &berth_db::Db, args: &GcArgs, triggered_by: &str) -> Result<(i64, bool)> {
    let json = serde_json::to_string(args).expect("arguments serialise");
    Ok(db.enqueue_job(GC, &json, Some("gc"), triggered_by, GC_ATTEMPTS).await?)
}

/// Sets (or with `None`, removes) the garbage collection schedule. The
/// expression is checked here, so a stored one always parses.
pub async fn set_gc_schedule(db: &berth_db::Db, cron: Option<&str>, args: &GcArgs) -> Result<()> {
    set_schedule(
        db,
        "gc",
        GC,
        cron,
        &serde_json::to_string(args).expect("arguments serialise"),
    )
    .await
}

/// Sets or removes a named schedule of jobs of `kind`.
pub async fn set_schedule(db: &berth_db::Db, name: &str, kind: &str, cron: Option<&str>, args: &str) -> Result<()> {
    match cron {
        None => {
            db.delete_schedule(name).await?;
        }
        Some(expr) => {
            let c = Cron::parse(expr).map_err(|e| Error::new(berth_oci::ErrorCode::Unsupported, e.to_string()))?;
            let next = c
                .next_after(berth_db::now_ms() / 1000)
                .ok_or_else(|| Error::new(berth_oci::ErrorCode::Unsupported, format!("cron {expr:?} never comes")))?;
            db.set_schedule(name, kind, args, c.as_str(), next * 1000).await?;
        }
    }
    Ok(())
}

/// The start of the serialised arguments of the jobs of one policy: job
/// arguments whose first field is `policy_id` (replication runs, webhook
/// deliveries) are found by it with [`berth_db::Db::jobs_with_args`].
pub fn policy_args_prefix(policy_id: i64) -> String {
    format!("{{\"policy_id\":{policy_id},")
}

/// Runs jobs for one process.
pub struct Runner {
    registry: Arc<Registry>,
    owner: String,
    /// Window and upload expiry when a job names none.
    gc_defaults: GcOptions,
    replicator: Option<Arc<crate::replication::Replicator>>,
    webhooks: Option<Arc<crate::webhook::Webhooks>>,
}

impl Runner {
    pub fn new(registry: Arc<Registry>, gc_defaults: GcOptions) -> Runner {
        Runner {
            registry,
            owner: format!("runner-{}", uuid::Uuid::new_v4().simple()),
            gc_defaults,
            replicator: None,
            webhooks: None,
        }
    }

    /// Lets this runner take replication runs too.
    pub fn with_replication(mut self, r: Arc<crate::replication::Replicator>) -> Runner {
        self.replicator = Some(r);
        self
    }

    /// Tells projects' webhooks when replication runs end.
    pub fn with_webhooks(mut self, w: Arc<crate::webhook::Webhooks>) -> Runner {
        self.webhooks = Some(w);
        self
    }

    /// Starts the runs of schedules that are due: each due time is claimed
    /// by one replica, which adds the job. Returns how many it added.
    pub async fn start_scheduled(&self) -> Result<usize> {
        let db = self.registry.db();
        let now = berth_db::now_ms();
        let mut started = 0;
        for s in db.due_schedules(now).await? {
            let next = match Cron::parse(&s.cron) {
                Ok(c) => c.next_after(now / 1000).map_or(i64::MAX, |t| t * 1000),
                Err(e) => {
                    tracing::warn!(schedule = %s.name, error = %e, "a stored schedule does not parse; it is stopped");
                    i64::MAX
                }
            };
            if !db.advance_schedule(&s.name, s.next_run_at, next).await? {
                continue;
            }
            let (attempts, dedup) = match s.kind.as_str() {
                GC => (GC_ATTEMPTS, "gc".to_string()),
                REPLICATION => (REPLICATION_ATTEMPTS, s.name.clone()),
                _ => (RETENTION_ATTEMPTS, s.name.clone()),
            };
            let (id, new) = db
                .enqueue_job(&s.kind, &s.args, Some(&dedup), "schedule", attempts)
                .await?;
            if new {
                started += 1;
                tracing::info!(schedule = %s.name, job = id, "scheduled job added");
            } else {
                tracing::info!(schedule = %s.name, job = id, "scheduled run skipped: the previous one is still pending or running");
            }
        }
        Ok(started)
    }

    /// Claims and runs jobs until none is due. Returns how many ran.
    pub async fn run_due(&self) -> Result<usize> {
        let mut ran = 0;
        let kinds: &[&str] = if self.replicator.is_some() { &KINDS } else { &KINDS[..3] };
        while let Some(job) = self.registry.db().claim_job(kinds, &self.owner, LEASE_MS).await? {
            ran += 1;
            let outcome = match job.kind.as_str() {
                GC => self.run_gc(job.id, &job.args).await,
                RETENTION => self.run_retention(job.id, &job.args).await,
                SCRUB => self.run_scrub(job.id).await,
                REPLICATION => self.run_replication(&job).await,
                other => Err(Error::internal("job", format!("no runner for jobs of kind {other}"))),
            };
            let db = self.registry.db();
            match outcome {
                Ok(progress) => {
                    db.finish_job(job.id, &self.owner, Ok(&progress), RETRY_MS).await?;
                }
                Err(e) => {
                    let msg = e.to_string();
                    let _ = db.job_log(job.id, &format!("failed: {msg}")).await;
                    db.finish_job(job.id, &self.owner, Err(&msg), RETRY_MS).await?;
                }
            }
        }
        Ok(ran)
    }

    /// Polls for due jobs every `every`, forever.
    pub fn spawn(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.start_scheduled().await {
                    tracing::warn!(error = %e, "starting scheduled jobs failed");
                }
                if let Err(e) = self.run_due().await {
                    tracing::warn!(error = %e, "running background jobs failed");
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    async fn run_gc(&self, id: i64, args: &str) -> Result<String> {
        let a: GcArgs = serde_json::from_str(args).map_err(|e| Error::internal("gc job arguments", e))?;
        let options = GcOptions {
            min_age: a.min_age_secs.map_or(self.gc_defaults.min_age, Duration::from_secs),
            untagged: a.delete_untagged,
            dry_run: a.dry_run,
            upload_max_age: self.gc_defaults.upload_max_age,
        };
        let db = self.registry.db();
        db.job_log(
            id,
            &format!(
                "garbage collection: window {} s, untagged manifests {}, dry run {}",
                options.min_age.as_secs(),
                if options.untagged { "too" } else { "kept" },
                options.dry_run
            ),
        )
        .await?;
        let latest: Arc<Mutex<Option<GcReport>>> = Arc::default();
        let sink = latest.clone();
        let progress = move |r: &GcReport| {
            *sink.lock().unwrap() = Some(r.clone());
        };
        let work = self.registry.collect_garbage(&options, &progress);
        tokio::pin!(work);
        let mut beat = tokio::time::interval(HEARTBEAT);
        let report = loop {
            tokio::select! {
                r = &mut work => break r?,
                _ = beat.tick() => {
                    let p = latest.lock().unwrap().clone().map(|r| serde_json::to_string(&r).expect("report serialises"));
                    if !db.job_heartbeat(id, &self.owner, LEASE_MS, p.as_deref()).await? {
                        return Err(Error::internal("gc job", "lost its lease; another replica runs it"));
                    }
                }
            }
        };
        db.job_log(id, &crate::gc::summary(&report)).await?;
        Ok(serde_json::to_string(&report).expect("report serialises"))
    }

    /// Runs `work`, renewing the lease and writing its progress and log
    /// lines every heartbeat; stops with an error if the lease is lost.
    async fn with_heartbeat<T>(
        &self,
        id: i64,
        work: impl std::future::Future<Output = Result<T>>,
        progress: Arc<Mutex<Option<String>>>,
        lines: Arc<Mutex<Vec<String>>>,
    ) -> Result<T> {
        let db = self.registry.db();
        let flush = || async {
            let pending: Vec<String> = std::mem::take(&mut *lines.lock().unwrap());
            if !pending.is_empty() {
                db.job_log(id, pending.join("\n").as_str()).await?;
            }
            Ok::<_, Error>(())
        };
        tokio::pin!(work);
        let mut beat = tokio::time::interval(HEARTBEAT);
        let out = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = beat.tick() => {
                    flush().await?;
                    let p = progress.lock().unwrap().clone();
                    if !db.job_heartbeat(id, &self.owner, LEASE_MS, p.as_deref()).await? {
                        return Err(Error::internal("job", "lost its lease; another replica runs it"));
                    }
                }
            }
        };
        flush().await?;
        out
    }

    async fn run_retention(&self, id: i64, args: &str) -> Result<String> {
        let a: RetentionArgs = serde_json::from_str(args).map_err(|e| Error::internal("retention job arguments", e))?;
        let db = self.registry.db();
        let Some(row) = db.retention_policy_by_id(a.policy_id).await? else {
            db.job_log(
                id,
                &format!("retention policy {} no longer exists; nothing to do", a.policy_id),
            )
            .await?;
            return Ok("{}".into());
        };
        let Some(project) = db.project_by_id(row.project_id).await? else {
            return Ok("{}".into());
        };
        let policy: crate::retention::Policy =
            serde_json::from_str(&row.rules).map_err(|e| Error::internal("stored retention policy", e))?;
        db.job_log(
            id,
            &format!(
                "retention of project {}: {} rules{}",
                project.name,
                policy.rules.len(),
                if a.dry_run { ", dry run" } else { "" }
            ),
        )
        .await?;
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let log = move |l: String| sink.lock().unwrap().push(l);
        let work = self
            .registry
            .apply_retention(&project.name, a.policy_id, &policy.rules, a.dry_run, &log);
        let report = self.with_heartbeat(id, work, Arc::default(), lines).await?;
        db.job_log(
            id,
            &format!(
                "{} artifacts {} in {} repositories",
                report.deleted,
                if a.dry_run { "would be deleted" } else { "deleted" },
                report.repositories.len()
            ),
        )
        .await?;
        Ok(serde_json::to_string(&report).expect("report serialises"))
    }

    async fn run_replication(&self, job: &berth_db::JobRow) -> Result<String> {
        let id = job.id;
        let a: crate::replication::RunArgs =
            serde_json::from_str(&job.args).map_err(|e| Error::internal("replication job arguments", e))?;
        let Some(rep) = &self.replicator else {
            return Err(Error::internal("replication job", "this runner does not replicate"));
        };
        let progress: Arc<Mutex<Option<String>>> = Arc::default();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (p, l) = (progress.clone(), lines.clone());
        let set_progress = move |r: crate::replication::RunProgress| {
            *p.lock().unwrap() = Some(serde_json::to_string(&r).expect("progress serialises"));
        };
        let log = move |line: String| l.lock().unwrap().push(line);
        let work = rep.run(id, &a, &log, &set_progress);
        let outcome = self.with_heartbeat(id, work, progress, lines).await;
        if let Some(w) = &self.webhooks {
            if let Err(e) = self.replication_notices(w, job, &a, &outcome).await {
                tracing::warn!(job = id, error = %e, "queueing replication webhooks failed");
            }
        }
        let report = outcome?;
        Ok(serde_json::to_string(&report).expect("progress serialises"))
    }

    /// A REPLICATION event for each local project a finished run touched.
    async fn replication_notices(
        &self,
        w: &crate::webhook::Webhooks,
        job: &berth_db::JobRow,
        a: &crate::replication::RunArgs,
        outcome: &Result<crate::replication::RunProgress>,
    ) -> Result<()> {
        let db = self.registry.db();
        let Some(row) = db.policy(a.policy_id).await? else {
            return Ok(());
        };
        let policy = crate::replication::Policy::from_row(row)?;
        let pushes = policy.pushes();
        let id = job.id;
        let tasks = db.tasks(id).await?;
        let mut by_project: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
        for t in &tasks {
            let local = if pushes { &t.src_resource } else { &t.dst_resource };
            let project = local.split('/').next().unwrap_or_default().to_string();
            by_project.entry(project).or_default().push(serde_json::json!({
                "type": "image", "status": t.status, "name_tag": local, "digest": t.digest,
                "operation": t.operation,
            }));
        }
        let (status, counts) = match outcome {
            Ok(p) => ("Success", serde_json::to_value(p).unwrap_or_default()),
            Err(e) => ("Failed", serde_json::json!({"error": e.message})),
        };
        for (project, artifacts) in by_project {
            let data = serde_json::json!({
                "replication": {
                    "execution_id": id, "policy_id": policy.row.id, "policy_name": policy.row.name,
                    "trigger_type": a.trigger, "job_status": status, "counts": counts,
                    "direction": if pushes { "push" } else { "pull" },
                    "successful_artifact": artifacts.iter().filter(|x| x["status"] == berth_db::TASK_SUCCEEDED).collect::<Vec<_>>(),
                    "failed_artifact": artifacts.iter().filter(|x| x["status"] == berth_db::TASK_FAILED).collect::<Vec<_>>(),
                },
            });
            w.notify(&crate::webhook::Notice {
                event_type: crate::webhook::REPLICATION,
                project,
                operator: job.triggered_by.clone(),
                data,
            })
            .await?;
        }
        Ok(())
    }

    async fn run_scrub(&self, id: i64) -> Result<String> {
        let progress: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = progress.clone();
        let report_progress = move |r: &crate::scrub::ScrubReport| {
            *sink.lock().unwrap() = Some(serde_json::to_string(r).expect("report serialises"));
        };
        let work = self.registry.scrub(&report_progress);
        let report = self.with_heartbeat(id, work, progress, Arc::default()).await?;
        let db = self.registry.db();
        for line in report.corrupt.iter().chain(&report.missing).chain(&report.dangling) {
            db.job_log(id, line).await?;
        }
        db.job_log(id, &crate::scrub::summary(&report)).await?;
        Ok(serde_json::to_string(&report).expect("report serialises"))
    }
}
