//! Webhooks: per-project policies that POST an event to HTTP targets when
//! an artifact is pushed, pulled or deleted, a replication run ends, or a
//! push is refused by a quota.
//!
//! A delivery is a job (kind [`WEBHOOK`]) holding the exact body to send,
//! so retries send the same bytes, any replica can deliver it, and it is
//! retried with doubling waits until its attempts run out; each attempt's
//! answer goes into the job's log. Bodies are Harbor's payload or a
//! CloudEvents 1.0 structured event. A target with a secret gets
//! `X-Berth-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_db::{Db, JobRow, WebhookRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::sealed::Sealer;
use crate::{Error, ErrorCode, Result};

/// Job kind of a delivery.
pub const WEBHOOK: &str = "webhook";

pub const PUSH_ARTIFACT: &str = "PUSH_ARTIFACT";
pub const PULL_ARTIFACT: &str = "PULL_ARTIFACT";
pub const DELETE_ARTIFACT: &str = "DELETE_ARTIFACT";
pub const REPLICATION: &str = "REPLICATION";
pub const QUOTA_EXCEED: &str = "QUOTA_EXCEED";
pub const EVENT_TYPES: [&str; 5] = [PUSH_ARTIFACT, PULL_ARTIFACT, DELETE_ARTIFACT, REPLICATION, QUOTA_EXCEED];
pub const PAYLOAD_FORMATS: [&str; 2] = ["Default", "CloudEvents"];

/// How long a project's policies are believed without reading them again.
const POLICY_TTL: Duration = Duration::from_secs(3);
const LEASE_MS: i64 = 60_000;
const PARALLEL: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(15);
pub const SIGNATURE_HEADER: &str = "x-berth-signature-256";

fn bad(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::Unsupported, m.into())
}

fn default_kind() -> String {
    "http".into()
}

fn default_format() -> String {
    "Default".into()
}

/// One place a policy sends to, in Harbor's shape (`secret` is berth's).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Target {
    #[serde(rename = "type", default = "default_kind")]
    pub kind: String,
    pub address: String,
    /// Sent as the Authorization header. Stored sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    #[serde(default)]
    pub skip_cert_verify: bool,
    #[serde(default = "default_format")]
    pub payload_format: String,
    /// Key of the body's HMAC signature. Stored sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// What a policy stores besides its name and state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    #[serde(default)]
    pub description: String,
    pub event_types: Vec<String>,
    pub targets: Vec<Target>,
}

impl Spec {
    pub fn check(&self) -> Result<()> {
        if self.event_types.is_empty() {
            return Err(bad(format!(
                "a webhook needs event_types: some of {}",
                EVENT_TYPES.join(", ")
            )));
        }
        for t in &self.event_types {
            if !EVENT_TYPES.contains(&t.as_str()) {
                return Err(bad(format!(
                    "event type {t:?} is not one berth sends; use {}",
                    EVENT_TYPES.join(", ")
                )));
            }
        }
        if self.targets.is_empty() {
            return Err(bad("a webhook needs at least one target"));
        }
        for t in &self.targets {
            if t.kind != "http" {
                return Err(bad(format!("target type {:?} is not supported; use http", t.kind)));
            }
            if !(t.address.starts_with("http://") || t.address.starts_with("https://"))
                || reqwest::Url::parse(&t.address).is_err()
            {
                return Err(bad(format!(
                    "target address {:?} is not an http:// or https:// URL",
                    t.address
                )));
            }
            if !PAYLOAD_FORMATS.contains(&t.payload_format.as_str()) {
                return Err(bad(format!(
                    "payload_format {:?} is not one of {}",
                    t.payload_format,
                    PAYLOAD_FORMATS.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Something that happened in a project.
#[derive(Clone, Debug)]
pub struct Notice {
    pub event_type: &'static str,
    pub project: String,
    pub operator: String,
    /// Harbor's `event_data`.
    pub data: Value,
}

/// A delivery job's arguments. `policy_id` comes first: the policy's
/// deliveries are found by the prefix of the serialised arguments.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    pub policy_id: i64,
    pub target: usize,
    pub event_type: String,
    pub address: String,
    pub content_type: String,
    pub body: String,
}

impl Delivery {
    pub fn from_job(j: &JobRow) -> Option<Delivery> {
        serde_json::from_str(&j.args).ok()
    }
}

/// Harbor's name for an event in CloudEvents.
fn cloud_type(event_type: &str) -> &'static str {
    match event_type {
        PUSH_ARTIFACT => "harbor.artifact.pushed",
        PULL_ARTIFACT => "harbor.artifact.pulled",
        DELETE_ARTIFACT => "harbor.artifact.deleted",
        REPLICATION => "harbor.replication.status.changed",
        _ => "harbor.quota.exceeded",
    }
}

/// The body a target gets, and its content type.
pub fn payload(format: &str, n: &Notice, policy_id: i64, project_id: i64, at_ms: i64) -> (String, String) {
    if format == "CloudEvents" {
        let id = uuid::Uuid::new_v4().to_string();
        let v = json!({
            "specversion": "1.0",
            "id": id,
            "requestid": id,
            "source": format!("/projects/{project_id}/webhook/policies/{policy_id}"),
            "type": cloud_type(n.event_type),
            "datacontenttype": "application/json",
            "time": crate::auth::rfc3339(at_ms / 1000),
            "operator": n.operator,
            "data": n.data,
        });
        (v.to_string(), "application/cloudevents+json".into())
    } else {
        let v = json!({
            "type": n.event_type,
            "occur_at": at_ms / 1000,
            "operator": n.operator,
            "event_data": n.data,
        });
        (v.to_string(), "application/json".into())
    }
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

fn context(policy_id: i64, field: &str, target: usize) -> String {
    format!("webhook:{policy_id}:{target}:{field}")
}

struct Known {
    at: Instant,
    project_id: i64,
    policies: Vec<(WebhookRow, Spec)>,
}

pub struct Webhooks {
    db: Db,
    sealer: Option<Sealer>,
    /// By project name.
    projects: Mutex<HashMap<String, Known>>,
    retry_ms: i64,
    attempts: i64,
    owner: String,
    wake: tokio::sync::Notify,
}

impl Webhooks {
    /// `retry_ms`: the first retry's wait, doubled for each one after.
    pub fn new(db: Db, sealer: Option<Sealer>, retry_ms: i64, attempts: i64) -> Arc<Webhooks> {
        Arc::new(Webhooks {
            db,
            sealer,
            projects: Mutex::default(),
            retry_ms,
            attempts: attempts.max(1),
            owner: format!("webhooks-{}", uuid::Uuid::new_v4().simple()),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn sealer(&self) -> Result<&Sealer> {
        self.sealer.as_ref().ok_or_else(|| {
            bad("a webhook's auth_header or secret needs a secret key: set auth.secret_key (the same on every replica)")
        })
    }

    /// Seals the targets' secrets of a stored policy. `old`: the stored
    /// spec, whose secrets a target keeps when it names none (None); an
    /// empty string removes one.
    pub fn seal(&self, policy_id: i64, spec: &Spec, old: Option<&Spec>) -> Result<Spec> {
        let mut out = spec.clone();
        for (i, t) in out.targets.iter_mut().enumerate() {
            let prev = old.and_then(|o| o.targets.get(i));
            for (field, value, prev) in [
                (
                    "auth_header",
                    &mut t.auth_header,
                    prev.and_then(|p| p.auth_header.clone()),
                ),
                ("secret", &mut t.secret, prev.and_then(|p| p.secret.clone())),
            ] {
                *value = match value.take() {
                    None => prev,
                    Some(v) if v.is_empty() => None,
                    Some(v) => Some(self.sealer()?.seal(&v, &context(policy_id, field, i))),
                };
            }
        }
        Ok(out)
    }

    /// Fails before anything is stored when secrets cannot be sealed.
    pub fn check_sealable(&self, spec: &Spec) -> Result<()> {
        if spec.targets.iter().any(|t| {
            t.auth_header.as_deref().is_some_and(|v| !v.is_empty())
                || t.secret.as_deref().is_some_and(|v| !v.is_empty())
        }) {
            self.sealer()?;
        }
        Ok(())
    }

    /// Forget cached policies of a project (after a change through this replica).
    pub fn changed(&self, project_id: i64) {
        self.projects.lock().unwrap().retain(|_, k| k.project_id != project_id);
    }

    /// False only when it is known, without asking the database, that no
    /// enabled policy of the project wants `event_type`: the cheap check
    /// every pull makes.
    pub fn may_want(&self, project: &str, event_type: &str) -> bool {
        match self.projects.lock().unwrap().get(project) {
            Some(k) if k.at.elapsed() < POLICY_TTL => k
                .policies
                .iter()
                .any(|(row, spec)| row.enabled && spec.event_types.iter().any(|t| t == event_type)),
            _ => true,
        }
    }

    /// The project's id and policies; None if there is no such project
    /// (not cached: it may be created any moment).
    async fn policies(&self, project: &str) -> Result<Option<(i64, Vec<(WebhookRow, Spec)>)>> {
        if let Some(k) = self.projects.lock().unwrap().get(project) {
            if k.at.elapsed() < POLICY_TTL {
                return Ok(Some((k.project_id, k.policies.clone())));
            }
        }
        let Some(p) = self.db.project_by_name(project).await? else {
            return Ok(None);
        };
        let mut policies = Vec::new();
        for row in self.db.webhooks(p.id).await? {
            match serde_json::from_str::<Spec>(&row.spec) {
                Ok(spec) => policies.push((row, spec)),
                Err(e) => tracing::warn!(policy = row.id, error = %e, "a stored webhook policy does not parse"),
            }
        }
        self.projects.lock().unwrap().insert(
            project.to_string(),
            Known {
                at: Instant::now(),
                project_id: p.id,
                policies: policies.clone(),
            },
        );
        Ok(Some((p.id, policies)))
    }

    /// Queues deliveries of `n` to every enabled policy of its project that
    /// wants it. Returns how many were queued.
    pub async fn notify(&self, n: &Notice) -> Result<usize> {
        let Some((project_id, policies)) = self.policies(&n.project).await? else {
            return Ok(0);
        };
        let now = berth_db::now_ms();
        let mut queued = 0;
        for (row, spec) in policies {
            if !row.enabled || !spec.event_types.iter().any(|t| t == n.event_type) {
                continue;
            }
            for (i, t) in spec.targets.iter().enumerate() {
                let (body, content_type) = payload(&t.payload_format, n, row.id, project_id, now);
                let d = Delivery {
                    policy_id: row.id,
                    target: i,
                    event_type: n.event_type.to_string(),
                    address: t.address.clone(),
                    content_type,
                    body,
                };
                let args = serde_json::to_string(&d).expect("delivery serialises");
                self.db
                    .enqueue_job(WEBHOOK, &args, None, &n.operator, self.attempts)
                    .await?;
                queued += 1;
            }
        }
        if queued > 0 {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// As [`Webhooks::notify`], in the background: the caller's answer does not wait.
    pub fn notify_later(self: &Arc<Self>, n: Notice) {
        if !self.may_want(&n.project, n.event_type) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.notify(&n).await {
                tracing::warn!(event = n.event_type, project = %n.project, error = %e, "queueing webhook deliveries failed");
            }
        });
    }

    /// Delivers queued events, a few at a time, until the process ends.
    pub fn spawn(self: Arc<Self>, poll: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
            let clients = Arc::new(Clients::new());
            loop {
                let permit = slots.clone().acquire_owned().await.expect("never closed");
                match self.db.claim_job(&[WEBHOOK], &self.owner, LEASE_MS).await {
                    Ok(Some(job)) => {
                        let (this, clients) = (self.clone(), clients.clone());
                        tokio::spawn(async move {
                            this.deliver(&clients, job).await;
                            drop(permit);
                        });
                    }
                    Ok(None) => {
                        drop(permit);
                        let _ = tokio::time::timeout(poll, self.wake.notified()).await;
                    }
                    Err(e) => {
                        drop(permit);
                        tracing::warn!(error = %e, "claiming webhook deliveries failed");
                        tokio::time::sleep(poll).await;
                    }
                }
            }
        })
    }

    async fn deliver(&self, clients: &Clients, job: JobRow) {
        let outcome = self.attempt(clients, &job).await;
        let db = &self.db;
        let r = match outcome {
            Ok(line) => {
                let _ = db.job_log(job.id, &line).await;
                db.finish_job(
                    job.id,
                    &self.owner,
                    Ok(&json!({"message": line}).to_string()),
                    self.retry_ms,
                )
                .await
            }
            Err(line) => {
                let left = job.max_attempts - job.attempts;
                let note = if left > 0 {
                    format!("{line}; {left} attempts left")
                } else {
                    format!("{line}; no attempts left")
                };
                let _ = db.job_log(job.id, &note).await;
                db.finish_job(job.id, &self.owner, Err(&line), self.retry_ms).await
            }
        };
        if let Err(e) = r {
            tracing::warn!(job = job.id, error = %e, "recording a webhook delivery failed");
        }
    }

    /// One attempt: the log line of its outcome.
    async fn attempt(&self, clients: &Clients, job: &JobRow) -> std::result::Result<String, String> {
        let d = Delivery::from_job(job).ok_or("the delivery's arguments do not parse")?;
        let row = self
            .db
            .webhook_by_id(d.policy_id)
            .await
            .map_err(|e| format!("reading the policy: {e}"))?;
        let Some(row) = row else {
            return Ok("the policy was deleted; not sent".into());
        };
        if !row.enabled {
            return Ok("the policy was disabled; not sent".into());
        }
        let spec: Spec = serde_json::from_str(&row.spec).map_err(|e| format!("the stored policy: {e}"))?;
        let target = spec.targets.get(d.target).cloned().unwrap_or_default();
        let open = |v: &Option<String>, field: &str| -> std::result::Result<Option<String>, String> {
            match v {
                None => Ok(None),
                Some(sealed) => {
                    let s = self.sealer().map_err(|e| e.message)?;
                    s.open(sealed, &context(d.policy_id, field, d.target))
                        .map(Some)
                        .map_err(|e| e.message)
                }
            }
        };
        let auth = open(&target.auth_header, "auth_header")?;
        let secret = open(&target.secret, "secret")?;
        let mut req = clients
            .get(target.skip_cert_verify)
            .post(&d.address)
            .header(reqwest::header::CONTENT_TYPE, &d.content_type)
            .header("x-berth-event", &d.event_type)
            .header("x-berth-delivery", job.id.to_string())
            .body(d.body.clone());
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        if let Some(s) = secret {
            req = req.header(SIGNATURE_HEADER, signature(&s, d.body.as_bytes()));
        }
        let started = Instant::now();
        let attempt = job.attempts;
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(format!(
                "attempt {attempt}: POST {} answered {} in {} ms",
                d.address,
                r.status().as_u16(),
                started.elapsed().as_millis()
            )),
            Ok(r) => {
                let status = r.status().as_u16();
                let text: String = r.text().await.unwrap_or_default().chars().take(200).collect();
                Err(format!(
                    "attempt {attempt}: POST {} answered {status}{}",
                    d.address,
                    if text.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", text.trim())
                    }
                ))
            }
            Err(e) => Err(format!(
                "attempt {attempt}: POST {}: {}",
                d.address,
                crate::remote::with_causes(&e)
            )),
        }
    }
}

/// Two HTTP clients: one that checks certificates, one that does not.
struct Clients {
    checked: reqwest::Client,
    unchecked: reqwest::Client,
}

impl Clients {
    fn new() -> Clients {
        let build = |skip: bool| {
            reqwest::Client::builder()
                .use_rustls_tls()
                .timeout(TIMEOUT)
                .danger_accept_invalid_certs(skip)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("berth-webhook/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("HTTP client")
        };
        Clients {
            checked: build(false),
            unchecked: build(true),
        }
    }

    fn get(&self, skip_cert_verify: bool) -> &reqwest::Client {
        if skip_cert_verify {
            &self.unchecked
        } else {
            &self.checked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            description: String::new(),
            event_types: vec![PUSH_ARTIFACT.into()],
            targets: vec![Target {
                kind: "http".into(),
                address: "http://127.0.0.1:1/hook".into(),
                payload_format: "Default".into(),
                ..Target::default()
            }],
        }
    }

    #[test]
    fn specs_are_checked() {
        assert!(spec().check().is_ok());
        let mut s = spec();
        s.event_types = vec!["SCANNING_COMPLETED".into()];
        assert!(s.check().unwrap_err().message.contains("SCANNING_COMPLETED"));
        let mut s = spec();
        s.targets[0].address = "ftp://x".into();
        assert!(s.check().is_err());
        let mut s = spec();
        s.targets[0].payload_format = "Xml".into();
        assert!(s.check().is_err());
        let mut s = spec();
        s.targets.clear();
        assert!(s.check().is_err());
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn payloads_in_both_formats() {
        let n = Notice {
            event_type: PUSH_ARTIFACT,
            project: "library".into(),
            operator: "admin".into(),
            data: json!({"resources": [{"tag": "v1"}]}),
        };
        let (body, ct) = payload("Default", &n, 3, 1, 1_700_000_000_000);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ct, "application/json");
        assert_eq!(
            (v["type"].as_str(), v["occur_at"].as_i64(), v["operator"].as_str()),
            (Some(PUSH_ARTIFACT), Some(1_700_000_000), Some("admin"))
        );
        assert_eq!(v["event_data"]["resources"][0]["tag"], "v1");
        let (body, ct) = payload("CloudEvents", &n, 3, 1, 1_700_000_000_000);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ct, "application/cloudevents+json");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "harbor.artifact.pushed");
        assert_eq!(v["source"], "/projects/1/webhook/policies/3");
        assert_eq!(v["time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["data"]["resources"][0]["tag"], "v1");
    }

    #[test]
    fn arguments_begin_with_the_policy() {
        let d = Delivery {
            policy_id: 12,
            target: 0,
            event_type: PUSH_ARTIFACT.into(),
            address: "http://x".into(),
            content_type: "application/json".into(),
            body: "{}".into(),
        };
        let prefix = crate::jobs::policy_args_prefix;
        assert!(serde_json::to_string(&d).unwrap().starts_with(&prefix(12)));
        assert!(!serde_json::to_string(&d).unwrap().starts_with(&prefix(1)));
    }
}
