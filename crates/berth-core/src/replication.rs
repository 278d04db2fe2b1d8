//! Replication: copying artifacts between this berth and another registry,
//! in either direction, as jobs any replica can run and take over.
//!
//! A run lists what its policy selects at the source (repositories by name
//! pattern, tags by tag pattern, optionally artifact types), then copies
//! each artifact: blobs the destination lacks (HEAD first, then a
//! cross-repository mount where one of this run's copies already put it),
//! child manifests of an index, the manifest itself byte for byte (so its
//! digest never changes), and its referrers (signatures, SBOMs) after it.
//! Each artifact is a task row; a run that is taken over skips the tasks
//! already done. Transient failures (429, 5xx, broken connections) are
//! retried with backoff, waiting at least what `Retry-After` asks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_db::{PolicyRow, RegistryRow, TaskRow};
use berth_oci::{Descriptor, Digest, ErrorCode, ManifestRef, ParsedManifest, Reference, RepoName};
use berth_storage::ByteStream;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::policy::pattern_matches;
use crate::registry::Registry;
use crate::remote::{counted, Limiter, Remote, RemoteConfig, RemoteManifest, Retry, TResult, TransferError};
use crate::sealed::Sealer;
use crate::{Error, Result};

/// The kinds of remote registry berth replicates with.
pub const REGISTRY_TYPES: [&str; 2] = ["harbor", "docker-registry"];

/// Artifacts copied at once within one run.
const PARALLEL: usize = 3;
/// How deep referrers of referrers are followed.
const REFERRER_DEPTH: usize = 3;

// ---- policies ----

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Filter {
    /// `name` (repository, with its project), `tag`, or `artifact_type`.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    /// `matches` (default) or `excludes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoration: Option<String>,
}

impl Filter {
    fn admits(&self, s: &str) -> bool {
        pattern_matches(&self.value, s) != (self.decoration.as_deref() == Some("excludes"))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TriggerSettings {
    #[serde(default)]
    pub cron: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Trigger {
    /// `manual`, `scheduled` or `event_based`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub trigger_settings: TriggerSettings,
}

impl Default for Trigger {
    fn default() -> Self {
        Trigger {
            kind: "manual".into(),
            trigger_settings: TriggerSettings::default(),
        }
    }
}

/// Retries of each step of a transfer (berth's addition to Harbor's policy).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RetrySpec {
    pub attempts: u32,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            attempts: 5,
            backoff_ms: 500,
            max_backoff_ms: 60_000,
        }
    }
}

/// What a policy says besides its name and its two ends: stored as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Spec {
    pub description: String,
    pub dest_namespace: String,
    /// -1: keep only the last path component under `dest_namespace`;
    /// n ≥ 0: drop the first n components and put the rest under it.
    pub dest_namespace_replace_count: i64,
    pub trigger: Trigger,
    pub filters: Vec<Filter>,
    /// Delete at the destination what is gone at the source.
    pub deletion: bool,
    /// Replace a destination tag that names other content.
    #[serde(rename = "override")]
    pub overwrite: bool,
    /// KB/s over the whole run; -1 or 0: unlimited.
    pub speed: i64,
    pub retry: RetrySpec,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            description: String::new(),
            dest_namespace: String::new(),
            dest_namespace_replace_count: -1,
            trigger: Trigger::default(),
            filters: vec![],
            deletion: false,
            overwrite: true,
            speed: -1,
            retry: RetrySpec::default(),
        }
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::Unsupported, msg)
}

impl Spec {
    /// Refuses what a run could not carry out, with the reason.
    pub fn check(&self) -> Result<()> {
        for f in &self.filters {
            if !["name", "tag", "artifact_type"].contains(&f.kind.as_str()) {
                return Err(bad(format!(
                    "filter type {:?} is not supported; use name, tag or artifact_type",
                    f.kind
                )));
            }
            if f.value.is_empty() {
                return Err(bad(format!("the {} filter has no value", f.kind)));
            }
            if let Some(d) = &f.decoration {
                if d != "matches" && d != "excludes" {
                    return Err(bad(format!("filter decoration {d:?}: use matches or excludes")));
                }
            }
        }
        match self.trigger.kind.as_str() {
            "manual" | "event_based" => {}
            "scheduled" => {
                crate::cron::Cron::parse(&self.trigger.trigger_settings.cron)
                    .map_err(|e| bad(format!("trigger cron: {e}")))?;
            }
            other => {
                return Err(bad(format!(
                    "trigger type {other:?}: use manual, scheduled or event_based"
                )))
            }
        }
        if !self.dest_namespace.is_empty() && self.dest_namespace.parse::<RepoName>().is_err() {
            return Err(bad(format!(
                "dest_namespace {:?} is not a valid repository path",
                self.dest_namespace
            )));
        }
        if self.retry.attempts == 0 || self.retry.attempts > 100 {
            return Err(bad("retry.attempts is 1 to 100"));
        }
        Ok(())
    }

    fn filters_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Filter> + 'a {
        self.filters.iter().filter(move |f| f.kind == kind)
    }

    pub fn admits_repository(&self, repo: &str) -> bool {
        self.filters_of("name").all(|f| f.admits(repo))
    }

    pub fn admits_tag(&self, tag: &str) -> bool {
        self.filters_of("tag").all(|f| f.admits(tag))
    }

    pub fn admits_type(&self, artifact_type: &str) -> bool {
        self.filters_of("artifact_type").all(|f| f.admits(artifact_type))
    }

    /// Where a source repository goes at the destination.
    pub fn destination(&self, src: &str) -> String {
        if self.dest_namespace.is_empty() {
            return src.to_string();
        }
        let parts: Vec<&str> = src.split('/').collect();
        let keep = match usize::try_from(self.dest_namespace_replace_count) {
            Ok(n) => &parts[n.min(parts.len() - 1)..],
            Err(_) => &parts[parts.len() - 1..],
        };
        format!("{}/{}", self.dest_namespace, keep.join("/"))
    }

    /// A repository name without wildcards, when the name filter is one:
    /// then the source's catalog (often closed to robots) is not needed.
    fn literal_repository(&self) -> Option<String> {
        let mut names = self.filters_of("name");
        let f = names.next()?;
        let literal = !f.value.contains(['*', '?', '{', '['])
            && f.decoration.as_deref() != Some("excludes")
            && names.next().is_none();
        literal.then(|| f.value.clone())
    }

    fn retry(&self) -> Retry {
        Retry {
            attempts: self.retry.attempts,
            base: Duration::from_millis(self.retry.backoff_ms),
            max: Duration::from_millis(self.retry.max_backoff_ms.max(self.retry.backoff_ms)),
        }
    }
}

/// A policy as stored, with its spec read.
#[derive(Clone, Debug)]
pub struct Policy {
    pub row: PolicyRow,
    pub spec: Spec,
}

impl Policy {
    pub fn from_row(row: PolicyRow) -> Result<Policy> {
        let spec: Spec =
            serde_json::from_str(&row.spec).map_err(|e| Error::internal("stored replication policy", e))?;
        Ok(Policy { row, spec })
    }

    /// Push-based: from this berth to a remote.
    pub fn pushes(&self) -> bool {
        self.row.src_registry_id.is_none()
    }
}

// ---- runs ----

/// What a replication job is asked to do.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RunArgs {
    /// First, so that the runs of one policy can be found by their arguments.
    pub policy_id: i64,
    /// `manual`, `scheduled` or `event_based`.
    pub trigger: String,
    /// For an event-based run: the one artifact it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<RunEvent>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunEvent {
    pub repository: String,
    pub reference: String,
    /// `push` or `delete`.
    pub operation: String,
}

/// Counts of a run's tasks, as Harbor reports an execution.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunProgress {
    pub total: i64,
    pub succeed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub in_progress: i64,
    pub bytes: u64,
}

/// One side of a copy: this berth, or a remote registry.
enum Side {
    Local(Arc<Registry>),
    Remote { remote: Arc<Remote>, harbor: bool },
}

fn repo_name(s: &str) -> TResult<RepoName> {
    s.parse()
        .map_err(|_| TransferError::permanent(format!("{s:?} is not a valid repository name")))
}

fn reference(s: &str) -> TResult<Reference> {
    s.parse()
        .map_err(|_| TransferError::permanent(format!("{s:?} is not a valid tag or digest")))
}

/// Not found, of any kind, is an answer rather than a failure.
fn absent(e: &Error) -> bool {
    matches!(
        e.code,
        ErrorCode::NameUnknown | ErrorCode::ManifestUnknown | ErrorCode::BlobUnknown
    )
}

fn index_descriptors(bytes: &[u8]) -> Vec<Descriptor> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| serde_json::from_value(d).ok())
        .collect()
}

impl Side {
    fn describe(&self) -> String {
        match self {
            Side::Local(_) => "this registry".into(),
            Side::Remote { remote, .. } => remote.url().to_string(),
        }
    }

    async fn repositories(&self) -> TResult<Vec<String>> {
        match self {
            Side::Local(r) => {
                let mut out = Vec::new();
                let mut last: Option<String> = None;
                loop {
                    let page = r.db().repositories(last.as_deref(), 1000).await.map_err(Error::from)?;
                    let done = page.len() < 1000;
                    last = page.last().cloned();
                    out.extend(page);
                    if done {
                        return Ok(out);
                    }
                }
            }
            Side::Remote { remote, .. } => remote.repositories().await,
        }
    }

    async fn tags(&self, repo: &str) -> TResult<Vec<String>> {
        match self {
            Side::Local(r) => match r.tags(&repo_name(repo)?, None, None).await {
                Ok(p) => Ok(p.items),
                Err(e) if absent(&e) => Ok(vec![]),
                Err(e) => Err(e.into()),
            },
            Side::Remote { remote, .. } => remote.tags(repo).await,
        }
    }

    async fn manifest(&self, repo: &str, reference_: &str) -> TResult<Option<RemoteManifest>> {
        match self {
            Side::Local(r) => match r
                .get_manifest(&repo_name(repo)?, &reference(reference_)?, &[], true)
                .await
            {
                Ok(m) => {
                    let mut bytes = Vec::with_capacity(m.size as usize);
                    let mut body = m.body.expect("a GET has a body");
                    while let Some(c) = body.next().await {
                        bytes.extend_from_slice(&c.map_err(|e| TransferError::permanent(e.to_string()))?);
                    }
                    Ok(Some(RemoteManifest {
                        bytes: Bytes::from(bytes),
                        media_type: m.media_type,
                        digest: m.digest,
                    }))
                }
                Err(e) if absent(&e) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Side::Remote { remote, .. } => remote.manifest(repo, reference_).await,
        }
    }

    async fn manifest_digest(&self, repo: &str, reference_: &str) -> TResult<Option<Digest>> {
        match self {
            Side::Local(r) => match r
                .get_manifest(&repo_name(repo)?, &reference(reference_)?, &[], false)
                .await
            {
                Ok(m) => Ok(Some(m.digest)),
                Err(e) if absent(&e) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Side::Remote { remote, .. } => remote.manifest_digest(repo, reference_).await,
        }
    }

    async fn has_blob(&self, repo: &str, digest: &Digest) -> TResult<bool> {
        match self {
            Side::Local(r) => match r.stat_blob(&repo_name(repo)?, digest).await {
                Ok(_) => Ok(true),
                Err(e) if absent(&e) => Ok(false),
                Err(e) => Err(e.into()),
            },
            Side::Remote { remote, .. } => remote.has_blob(repo, digest).await,
        }
    }

    async fn mount(&self, repo: &str, from: &str, digest: &Digest) -> TResult<bool> {
        match self {
            Side::Local(r) => match r.mount_blob(&repo_name(repo)?, &repo_name(from)?, digest).await {
                Ok(done) => Ok(done),
                Err(e) if absent(&e) => Ok(false),
                Err(e) => Err(e.into()),
            },
            Side::Remote { remote, .. } => remote.mount(repo, from, digest).await,
        }
    }

    async fn blob(&self, repo: &str, digest: &Digest) -> TResult<(u64, ByteStream)> {
        match self {
            Side::Local(r) => {
                let b = r.get_blob(&repo_name(repo)?, digest, None).await?;
                Ok((b.size, b.stream))
            }
            Side::Remote { remote, .. } => remote.blob(repo, digest).await,
        }
    }

    async fn put_blob(&self, repo: &str, digest: &Digest, size: u64, body: ByteStream) -> TResult<()> {
        match self {
            Side::Local(r) => match r.put_blob(&repo_name(repo)?, digest, body).await {
                Ok(_) => Ok(()),
                // The source's stream broke: another attempt may go through.
                Err(e) if e.code == ErrorCode::BlobUploadInvalid => Err(TransferError::transient(e.message)),
                Err(e) => Err(e.into()),
            },
            Side::Remote { remote, .. } => remote.put_blob(repo, digest, size, body).await,
        }
    }

    async fn put_manifest(&self, repo: &str, reference_: &str, m: &RemoteManifest) -> TResult<()> {
        match self {
            Side::Local(r) => {
                let mt = (!m.media_type.is_empty()).then_some(m.media_type.as_str());
                r.put_manifest(&repo_name(repo)?, &reference(reference_)?, mt, m.bytes.clone())
                    .await?;
                Ok(())
            }
            Side::Remote { remote, .. } => {
                let mt = if m.media_type.is_empty() {
                    ParsedManifest::parse(None, &m.bytes)
                        .map(|p| p.media_type)
                        .unwrap_or_else(|_| berth_oci::media_types::OCI_MANIFEST.to_string())
                } else {
                    m.media_type.clone()
                };
                remote.put_manifest(repo, reference_, &mt, m.bytes.clone()).await
            }
        }
    }

    async fn delete(&self, repo: &str, reference_: &str) -> TResult<bool> {
        match self {
            Side::Local(r) => match r.delete_manifest(&repo_name(repo)?, &reference(reference_)?).await {
                Ok(()) => Ok(true),
                Err(e) if absent(&e) => Ok(false),
                Err(e) => Err(e.into()),
            },
            Side::Remote { remote, .. } => remote.delete_manifest(repo, reference_).await,
        }
    }

    async fn referrers(&self, repo: &str, digest: &Digest) -> TResult<Vec<Descriptor>> {
        match self {
            Side::Local(r) => Ok(index_descriptors(&r.referrers(&repo_name(repo)?, digest, None).await?)),
            Side::Remote { remote, .. } => remote.referrers(repo, digest).await,
        }
    }

    /// Makes sure the repository's project exists where that is needed.
    async fn ensure_project(&self, repo: &str) -> TResult<()> {
        let project = repo.split('/').next().unwrap_or(repo);
        match self {
            Side::Local(r) => {
                let db = r.db();
                let existing = db.project_by_name(project).await.map_err(Error::from)?;
                if existing.as_ref().is_some_and(|p| p.registry_id.is_some()) {
                    return Err(TransferError::permanent(format!(
                        "project {project} is a proxy cache: replication does not write into it; choose another destination namespace"
                    )));
                }
                if existing.is_none() {
                    let owner = db.user_by_name("admin").await.map_err(Error::from)?.map_or(1, |u| u.id);
                    // Another run may create it meanwhile; either way it exists.
                    let _ = db
                        .create_project(project, false, owner, crate::auth::Role::ProjectAdmin.id())
                        .await;
                }
                Ok(())
            }
            Side::Remote { remote, harbor: true } => remote.ensure_project(project).await,
            Side::Remote { .. } => Ok(()),
        }
    }
}

/// What one artifact's copy came to.
struct Outcome {
    digest: Option<Digest>,
    skipped: bool,
    message: String,
}

/// One run's shared state.
struct Copier<'a> {
    src: &'a Side,
    dst: &'a Side,
    spec: &'a Spec,
    retry: Retry,
    limiter: Option<Arc<Limiter>>,
    bytes: Arc<AtomicU64>,
    /// Blobs this run put at the destination, and where: the next
    /// repository that needs one mounts it.
    placed: Mutex<HashMap<Digest, String>>,
    projects: tokio::sync::Mutex<HashSet<String>>,
}

impl Copier<'_> {
    async fn step<T, F, Fut>(&self, what: &str, log: &(dyn Fn(String) + Sync), op: F) -> TResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = TResult<T>>,
    {
        self.retry.run(what, log, op).await
    }

    async fn copy_blob(
        &self,
        src_repo: &str,
        dst_repo: &str,
        d: &Descriptor,
        log: &(dyn Fn(String) + Sync),
    ) -> TResult<()> {
        let digest = &d.digest;
        if self
            .step(&format!("HEAD blob {digest}"), log, || {
                self.dst.has_blob(dst_repo, digest)
            })
            .await?
        {
            return Ok(());
        }
        let from = self.placed.lock().unwrap().get(digest).cloned();
        if let Some(from) = from.filter(|f| f != dst_repo) {
            if self
                .step(&format!("mount {digest}"), log, || {
                    self.dst.mount(dst_repo, &from, digest)
                })
                .await?
            {
                log(format!("blob {digest}: mounted from {from}"));
                return Ok(());
            }
        }
        self.step(&format!("copy blob {digest}"), log, || async {
            let (size, stream) = self.src.blob(src_repo, digest).await?;
            let size = if size == 0 { d.size.max(0) as u64 } else { size };
            let mut stream = counted(stream, self.bytes.clone());
            if let Some(l) = &self.limiter {
                stream = l.wrap(stream);
            }
            self.dst.put_blob(dst_repo, digest, size, stream).await
        })
        .await?;
        log(format!("blob {digest}: {} bytes copied", d.size));
        self.placed.lock().unwrap().insert(digest.clone(), dst_repo.to_string());
        Ok(())
    }

    /// Copies everything a manifest references (blobs, child manifests);
    /// not the manifest itself.
    fn copy_content<'b>(
        &'b self,
        src_repo: &'b str,
        dst_repo: &'b str,
        m: &'b RemoteManifest,
        log: &'b (dyn Fn(String) + Sync),
    ) -> futures_util::future::BoxFuture<'b, TResult<()>> {
        Box::pin(async move {
            let mt = (!m.media_type.is_empty()).then_some(m.media_type.as_str());
            let parsed = ParsedManifest::parse(mt, &m.bytes)
                .map_err(|e| TransferError::permanent(format!("manifest {}: {e}", m.digest)))?;
            for r in &parsed.references {
                match r {
                    ManifestRef::Blob(d) => self.copy_blob(src_repo, dst_repo, d, log).await?,
                    ManifestRef::Manifest(d) => {
                        self.copy_manifest_by_digest(src_repo, dst_repo, &d.digest, log).await?;
                    }
                }
            }
            Ok(())
        })
    }

    /// A manifest known by digest (an index's child, a referrer), with its
    /// content. False if the destination had it already.
    async fn copy_manifest_by_digest(
        &self,
        src_repo: &str,
        dst_repo: &str,
        digest: &Digest,
        log: &(dyn Fn(String) + Sync),
    ) -> TResult<bool> {
        let d = digest.to_string();
        if self
            .step(&format!("HEAD manifest {d}"), log, || {
                self.dst.manifest_digest(dst_repo, &d)
            })
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let Some(child) = self
            .step(&format!("GET manifest {d}"), log, || self.src.manifest(src_repo, &d))
            .await?
        else {
            return Err(TransferError::permanent(format!("{d} is missing at the source")));
        };
        self.copy_content(src_repo, dst_repo, &child, log).await?;
        self.step(&format!("PUT manifest {d}"), log, || {
            self.dst.put_manifest(dst_repo, &d, &child)
        })
        .await?;
        Ok(true)
    }

    /// Referrers of `subject`, and theirs, to a bounded depth.
    fn copy_referrers<'b>(
        &'b self,
        src_repo: &'b str,
        dst_repo: &'b str,
        subject: &'b Digest,
        depth: usize,
        log: &'b (dyn Fn(String) + Sync),
    ) -> futures_util::future::BoxFuture<'b, TResult<usize>> {
        Box::pin(async move {
            if depth >= REFERRER_DEPTH {
                return Ok(0);
            }
            let list = self
                .step(&format!("referrers of {subject}"), log, || {
                    self.src.referrers(src_repo, subject)
                })
                .await?;
            let mut n = 0;
            for d in list {
                if let Some(t) = &d.artifact_type {
                    if !self.spec.admits_type(t) {
                        continue;
                    }
                }
                if self.copy_manifest_by_digest(src_repo, dst_repo, &d.digest, log).await? {
                    log(format!(
                        "referrer {} ({}) copied",
                        d.digest,
                        d.artifact_type.as_deref().unwrap_or(&d.media_type)
                    ));
                    n += 1;
                }
                n += self
                    .copy_referrers(src_repo, dst_repo, &d.digest, depth + 1, log)
                    .await?;
            }
            Ok(n)
        })
    }

    async fn ensure_project(&self, dst_repo: &str) -> TResult<()> {
        let project = dst_repo.split('/').next().unwrap_or(dst_repo).to_string();
        let mut done = self.projects.lock().await;
        if done.contains(&project) {
            return Ok(());
        }
        self.retry
            .run("creating the project", &|_| {}, || self.dst.ensure_project(dst_repo))
            .await?;
        done.insert(project);
        Ok(())
    }

    /// Copies `src_repo:reference` to `dst_repo:reference`.
    async fn copy_artifact(
        &self,
        src_repo: &str,
        dst_repo: &str,
        reference_: &str,
        log: &(dyn Fn(String) + Sync),
    ) -> TResult<Outcome> {
        let Some(m) = self
            .step(&format!("GET manifest {src_repo}:{reference_}"), log, || {
                self.src.manifest(src_repo, reference_)
            })
            .await?
        else {
            return Ok(Outcome {
                digest: None,
                skipped: true,
                message: "gone at the source".into(),
            });
        };
        let mt = (!m.media_type.is_empty()).then_some(m.media_type.as_str());
        let parsed = ParsedManifest::parse(mt, &m.bytes)
            .map_err(|e| TransferError::permanent(format!("manifest {}: {e}", m.digest)))?;
        let kind = parsed.artifact_type.clone().unwrap_or(parsed.media_type.clone());
        if !self.spec.admits_type(&kind) {
            return Ok(Outcome {
                digest: Some(m.digest),
                skipped: true,
                message: format!("artifact type {kind} is filtered out"),
            });
        }
        self.ensure_project(dst_repo).await?;
        let existing = self
            .step(&format!("HEAD manifest {dst_repo}:{reference_}"), log, || {
                self.dst.manifest_digest(dst_repo, reference_)
            })
            .await?;
        let (skipped, message) = match existing {
            Some(d) if d == m.digest => (true, "already at the destination".to_string()),
            Some(d) if !self.spec.overwrite => {
                return Ok(Outcome {
                    digest: Some(m.digest),
                    skipped: true,
                    message: format!("the destination's {reference_} is {d} and override is off"),
                })
            }
            _ => {
                self.copy_content(src_repo, dst_repo, &m, log).await?;
                self.step(&format!("PUT manifest {dst_repo}:{reference_}"), log, || {
                    self.dst.put_manifest(dst_repo, reference_, &m)
                })
                .await?;
                (false, format!("copied as {}", m.digest))
            }
        };
        // Referrers can arrive after their subject: look every time.
        let referrers = self.copy_referrers(src_repo, dst_repo, &m.digest, 0, log).await?;
        let message = if referrers > 0 {
            format!("{message}; {referrers} referrers copied")
        } else {
            message
        };
        Ok(Outcome {
            digest: Some(m.digest),
            skipped: skipped && referrers == 0,
            message,
        })
    }
}

/// One unit of a run: copy or delete one tag.
#[derive(Clone, Debug)]
struct Item {
    operation: &'static str,
    src_repo: String,
    dst_repo: String,
    reference: String,
}

impl Item {
    fn src_resource(&self) -> String {
        format!("{}:{}", self.src_repo, self.reference)
    }
    fn dst_resource(&self) -> String {
        format!("{}:{}", self.dst_repo, self.reference)
    }
}

/// Replication for one process: registries (with sealed credentials),
/// policies, and the runs the job runner hands it.
pub struct Replicator {
    registry: Arc<Registry>,
    sealer: Option<Sealer>,
}

/// What the API gives to create or change a registry endpoint.
#[derive(Clone, Debug, Default)]
pub struct RegistryInput {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub description: String,
    pub access_key: String,
    /// None: keep the stored one (on update) or none at all.
    pub access_secret: Option<String>,
    pub insecure: bool,
    pub ca_cert: Option<String>,
}

fn secret_context(id: i64) -> String {
    format!("registry:{id}")
}

impl Replicator {
    /// `sealer`: None when no secret key is configured, in which case
    /// registries can be added only without a password.
    pub fn new(registry: Arc<Registry>, sealer: Option<Sealer>) -> Replicator {
        Replicator { registry, sealer }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    fn seal(&self, id: i64, secret: &str) -> Result<String> {
        let s = self.sealer.as_ref().ok_or_else(|| {
            bad("storing a registry password needs a secret key: set auth.secret_key (the same on every replica)")
        })?;
        Ok(s.seal(secret, &secret_context(id)))
    }

    fn check_input(r: &RegistryInput) -> Result<()> {
        if r.name.trim().is_empty() {
            return Err(bad("a registry needs a name"));
        }
        if !REGISTRY_TYPES.contains(&r.kind.as_str()) {
            return Err(bad(format!(
                "registry type {:?} is not supported; use one of {}",
                r.kind,
                REGISTRY_TYPES.join(", ")
            )));
        }
        // Builds the client, which checks the URL and the CA.
        remote_for(&r.url, &r.access_key, None, r.insecure, r.ca_cert.clone()).map_err(|e| bad(e.message))?;
        Ok(())
    }

    /// Adds a registry endpoint; its password is sealed before it is stored.
    pub async fn create_registry(&self, r: &RegistryInput) -> Result<i64> {
        Self::check_input(r)?;
        if r.access_secret.as_deref().is_some_and(|s| !s.is_empty()) {
            // Fail before anything is written when there is no key.
            self.seal(0, "")?;
        }
        let db = self.registry.db();
        let id = db
            .create_registry(&RegistryRow {
                id: 0,
                name: r.name.clone(),
                kind: r.kind.clone(),
                url: r.url.trim_end_matches('/').to_string(),
                description: r.description.clone(),
                access_key: r.access_key.clone(),
                access_secret: None,
                insecure: r.insecure,
                ca_cert: r.ca_cert.clone(),
                created_at: 0,
                updated_at: 0,
            })
            .await?;
        if let Some(secret) = r.access_secret.as_deref().filter(|s| !s.is_empty()) {
            let mut row = db.registry(id).await?.expect("just created");
            row.access_secret = Some(self.seal(id, secret)?);
            db.update_registry(&row).await?;
        }
        Ok(id)
    }

    pub async fn update_registry(&self, id: i64, r: &RegistryInput) -> Result<bool> {
        Self::check_input(r)?;
        let db = self.registry.db();
        let Some(old) = db.registry(id).await? else {
            return Ok(false);
        };
        let access_secret = match r.access_secret.as_deref() {
            None => old.access_secret,
            Some("") => None,
            Some(s) => Some(self.seal(id, s)?),
        };
        db.update_registry(&RegistryRow {
            id,
            name: r.name.clone(),
            kind: r.kind.clone(),
            url: r.url.trim_end_matches('/').to_string(),
            description: r.description.clone(),
            access_key: r.access_key.clone(),
            access_secret,
            insecure: r.insecure,
            ca_cert: r.ca_cert.clone(),
            created_at: old.created_at,
            updated_at: 0,
        })
        .await
        .map_err(Error::from)
    }

    /// A client for a stored registry, its password opened.
    pub fn remote(&self, row: &RegistryRow) -> Result<Remote> {
        let password = match &row.access_secret {
            None => None,
            Some(sealed) => {
                let s = self.sealer.as_ref().ok_or_else(|| {
                    bad(format!(
                        "registry {} has a stored password but this replica has no secret key: set auth.secret_key",
                        row.name
                    ))
                })?;
                Some(s.open(sealed, &secret_context(row.id))?)
            }
        };
        remote_for(&row.url, &row.access_key, password, row.insecure, row.ca_cert.clone()).map_err(|e| bad(e.message))
    }

    /// Checks that a stored registry answers with its credentials.
    pub async fn ping(&self, row: &RegistryRow) -> std::result::Result<(), String> {
        let remote = self.remote(row).map_err(|e| e.message)?;
        remote.ping().await.map_err(|e| e.message)
    }

    /// Checks an endpoint before it is stored.
    pub async fn ping_input(&self, r: &RegistryInput) -> std::result::Result<(), String> {
        let remote = remote_for(
            &r.url,
            &r.access_key,
            r.access_secret.clone(),
            r.insecure,
            r.ca_cert.clone(),
        )
        .map_err(|e| e.message)?;
        remote.ping().await.map_err(|e| e.message)
    }

    /// Checks a policy's two ends: exactly one is this berth, the other a
    /// stored registry.
    pub async fn check_policy(&self, row: &PolicyRow, spec: &Spec) -> Result<()> {
        spec.check()?;
        if row.name.trim().is_empty() {
            return Err(bad("a replication policy needs a name"));
        }
        let remote = match (row.src_registry_id, row.dest_registry_id) {
            (Some(id), None) | (None, Some(id)) => id,
            _ => return Err(bad(
                "exactly one of src_registry and dest_registry names a remote registry; the other end is this berth",
            )),
        };
        if self.registry.db().registry(remote).await?.is_none() {
            return Err(bad(format!("registry {remote} does not exist")));
        }
        Ok(())
    }

    /// Stores the schedule a scheduled policy needs, or removes it.
    pub async fn sync_schedule(&self, p: &Policy) -> Result<()> {
        let name = schedule_name(p.row.id);
        let cron = (p.row.enabled && p.spec.trigger.kind == "scheduled")
            .then_some(p.spec.trigger.trigger_settings.cron.as_str());
        let args = RunArgs {
            policy_id: p.row.id,
            trigger: "scheduled".into(),
            event: None,
        };
        crate::jobs::set_schedule(
            self.registry.db(),
            &name,
            crate::jobs::REPLICATION,
            cron,
            &serde_json::to_string(&args).expect("arguments serialise"),
        )
        .await
    }

    /// Starts a run of a policy now. Returns the job id.
    pub async fn start(&self, policy_id: i64, trigger: &str, event: Option<RunEvent>) -> Result<(i64, bool)> {
        let dedup = event
            .is_none()
            .then(|| format!("{}-{policy_id}", crate::jobs::REPLICATION));
        let args = RunArgs {
            policy_id,
            trigger: trigger.into(),
            event,
        };
        Ok(self
            .registry
            .db()
            .enqueue_job(
                crate::jobs::REPLICATION,
                &serde_json::to_string(&args).expect("arguments serialise"),
                dedup.as_deref(),
                trigger,
                crate::jobs::REPLICATION_ATTEMPTS,
            )
            .await?)
    }

    /// Adds event-based runs for a push or delete in this berth.
    /// The tags on `digest` in `repo`.
    async fn tags_of(&self, repo: &str, digest: &str) -> Result<Vec<String>> {
        let db = self.registry.db();
        let Some(id) = db.repository_id(repo).await? else {
            return Ok(vec![]);
        };
        Ok(db
            .manifest_tags(id, digest)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    pub async fn on_event(&self, e: &crate::registry::Event) -> Result<usize> {
        let mut started = 0;
        for row in self.registry.db().policies().await? {
            if !row.enabled || row.src_registry_id.is_some() {
                continue;
            }
            let p = Policy::from_row(row)?;
            if p.spec.trigger.kind != "event_based" || !p.spec.admits_repository(&e.repository) {
                continue;
            }
            let (operation, references) = match &e.kind {
                crate::registry::EventKind::Push => match (&e.tag, &e.subject) {
                    (Some(t), _) => ("push", vec![t.clone()]),
                    // A referrer pushed by digest: runs for its subject's
                    // tags carry it (a run copies the referrers it finds).
                    (None, Some(subject)) => ("push", self.tags_of(&e.repository, subject).await?),
                    (None, None) => continue,
                },
                crate::registry::EventKind::Delete if p.spec.deletion => ("delete", vec![e.reference.clone()]),
                _ => continue,
            };
            for reference in references {
                if reference.contains(':') || !p.spec.admits_tag(&reference) {
                    continue;
                }
                self.start(
                    p.row.id,
                    "event_based",
                    Some(RunEvent {
                        repository: e.repository.clone(),
                        reference,
                        operation: operation.into(),
                    }),
                )
                .await?;
                started += 1;
            }
        }
        Ok(started)
    }

    /// Carries out a run (a job): `log` takes lines for the job's log,
    /// `progress` the counts as they change. Tasks already done in this run
    /// (before a takeover) are not done again. Fails if any task failed, so
    /// that the job's retry tries those again.
    pub async fn run(
        &self,
        execution_id: i64,
        args: &RunArgs,
        log: &(dyn Fn(String) + Sync),
        progress: &(dyn Fn(RunProgress) + Sync),
    ) -> Result<RunProgress> {
        let db = self.registry.db();
        let Some(row) = db.policy(args.policy_id).await? else {
            log(format!("policy {} no longer exists; nothing to do", args.policy_id));
            return Ok(RunProgress::default());
        };
        let policy = Policy::from_row(row)?;
        let remote_id = policy.row.src_registry_id.or(policy.row.dest_registry_id).unwrap_or(0);
        let Some(reg) = db.registry(remote_id).await? else {
            return Err(bad(format!("registry {remote_id} of the policy no longer exists")));
        };
        let remote = Side::Remote {
            remote: Arc::new(self.remote(&reg)?),
            harbor: reg.kind == "harbor",
        };
        let local = Side::Local(self.registry.clone());
        let (src, dst) = if policy.pushes() {
            (&local, &remote)
        } else {
            (&remote, &local)
        };
        let spec = &policy.spec;
        log(format!(
            "policy {:?}: {} → {}{}",
            policy.row.name,
            src.describe(),
            dst.describe(),
            if spec.speed > 0 {
                format!(", at most {} KB/s", spec.speed)
            } else {
                String::new()
            }
        ));
        let copier = Copier {
            src,
            dst,
            spec,
            retry: spec.retry(),
            limiter: (spec.speed > 0).then(|| Limiter::new(spec.speed as u64 * 1024)),
            bytes: Arc::default(),
            placed: Mutex::default(),
            projects: tokio::sync::Mutex::default(),
        };
        let plain = |e: TransferError| Error::new(ErrorCode::Unavailable, e.message);
        let items = match &args.event {
            Some(ev) => vec![Item {
                operation: if ev.operation == "delete" { "deletion" } else { "copy" },
                src_repo: ev.repository.clone(),
                dst_repo: spec.destination(&ev.repository),
                reference: ev.reference.clone(),
            }],
            None => self.plan(&copier, log).await.map_err(plain)?,
        };
        let done: HashMap<String, TaskRow> = db
            .tasks(execution_id)
            .await?
            .into_iter()
            .filter(|t| t.status == berth_db::TASK_SUCCEEDED || t.status == berth_db::TASK_SKIPPED)
            .map(|t| (format!("{}|{}", t.operation, t.src_resource), t))
            .collect();
        if !done.is_empty() {
            log(format!("resuming: {} tasks were done before", done.len()));
        }
        let todo: Vec<&Item> = items
            .iter()
            .filter(|i| !done.contains_key(&format!("{}|{}", i.operation, i.src_resource())))
            .collect();
        let total = items.len() as i64;
        let mut queue = todo.into_iter();
        let mut running = futures_util::stream::FuturesUnordered::new();
        loop {
            while running.len() < PARALLEL {
                let Some(item) = queue.next() else { break };
                running.push(self.task(execution_id, &copier, item, log));
            }
            match running.next().await {
                Some(r) => {
                    r?;
                    progress(self.progress_of(execution_id, total, &copier).await);
                }
                None => break,
            }
        }
        let p = self.progress_of(execution_id, total, &copier).await;
        progress(p.clone());
        log(format!(
            "{} tasks: {} copied or deleted, {} skipped, {} failed; {} bytes moved",
            p.total, p.succeed, p.skipped, p.failed, p.bytes
        ));
        if p.failed > 0 {
            return Err(Error::new(
                ErrorCode::Unavailable,
                format!("{} of {} tasks failed; see their logs", p.failed, p.total),
            ));
        }
        Ok(p)
    }

    async fn progress_of(&self, execution_id: i64, total: i64, copier: &Copier<'_>) -> RunProgress {
        let c = self.registry.db().task_counts(execution_id).await.unwrap_or_default();
        RunProgress {
            total,
            succeed: c.succeeded,
            failed: c.failed,
            skipped: c.skipped,
            in_progress: c.running,
            bytes: copier.bytes.load(Ordering::Relaxed),
        }
    }

    /// Runs one task and records it. Only database errors end the run; a
    /// failed copy is the task's.
    async fn task(
        &self,
        execution_id: i64,
        copier: &Copier<'_>,
        item: &Item,
        log: &(dyn Fn(String) + Sync),
    ) -> Result<()> {
        let db = self.registry.db();
        let task = db
            .start_task(execution_id, item.operation, &item.src_resource(), &item.dst_resource())
            .await?;
        let lines: Mutex<Vec<String>> = Mutex::default();
        let note = |l: String| lines.lock().unwrap().push(l);
        let outcome = match item.operation {
            "deletion" => copier
                .retry
                .run("delete", &note, || copier.dst.delete(&item.dst_repo, &item.reference))
                .await
                .map(|found| Outcome {
                    digest: None,
                    skipped: !found,
                    message: if found {
                        "deleted at the destination".into()
                    } else {
                        "not at the destination".into()
                    },
                }),
            _ => {
                copier
                    .copy_artifact(&item.src_repo, &item.dst_repo, &item.reference, &note)
                    .await
            }
        };
        let pending: Vec<String> = std::mem::take(&mut *lines.lock().unwrap());
        if !pending.is_empty() {
            db.task_log(task.id, &pending.join("\n")).await?;
        }
        let (status, digest, message) = match outcome {
            Ok(o) => (
                if o.skipped {
                    berth_db::TASK_SKIPPED
                } else {
                    berth_db::TASK_SUCCEEDED
                },
                o.digest.map(|d| d.to_string()),
                o.message,
            ),
            Err(e) => (berth_db::TASK_FAILED, None, e.message),
        };
        log(format!(
            "{} {} → {}: {status}, {message}",
            item.operation,
            item.src_resource(),
            item.dst_resource()
        ));
        db.task_log(task.id, &format!("{status}: {message}")).await?;
        db.finish_task(task.id, status, digest.as_deref(), 0, &message).await?;
        Ok(())
    }

    /// What a full run copies (and, with `deletion`, deletes).
    async fn plan(&self, c: &Copier<'_>, log: &(dyn Fn(String) + Sync)) -> TResult<Vec<Item>> {
        let repos = match c.spec.literal_repository() {
            Some(r) => vec![r],
            None => c
                .step("listing repositories", log, || c.src.repositories())
                .await?
                .into_iter()
                .filter(|r| c.spec.admits_repository(r))
                .collect(),
        };
        let mut items = Vec::new();
        for repo in repos {
            let dst_repo = c.spec.destination(&repo);
            let tags: Vec<String> = c
                .step(&format!("listing the tags of {repo}"), log, || c.src.tags(&repo))
                .await?
                .into_iter()
                .filter(|t| c.spec.admits_tag(t))
                .collect();
            if c.spec.deletion {
                let have: HashSet<&String> = tags.iter().collect();
                let theirs = c
                    .step(
                        &format!("listing the tags of {dst_repo} at the destination"),
                        log,
                        || c.dst.tags(&dst_repo),
                    )
                    .await?;
                for t in theirs.into_iter().filter(|t| c.spec.admits_tag(t) && !have.contains(t)) {
                    items.push(Item {
                        operation: "deletion",
                        src_repo: repo.clone(),
                        dst_repo: dst_repo.clone(),
                        reference: t,
                    });
                }
            }
            for t in tags {
                items.push(Item {
                    operation: "copy",
                    src_repo: repo.clone(),
                    dst_repo: dst_repo.clone(),
                    reference: t,
                });
            }
        }
        log(format!("{} tasks planned", items.len()));
        Ok(items)
    }
}

/// The name of a scheduled policy's schedule.
pub fn schedule_name(policy_id: i64) -> String {
    format!("replication-{policy_id}")
}

fn remote_for(
    url: &str,
    user: &str,
    password: Option<String>,
    insecure: bool,
    ca_pem: Option<String>,
) -> TResult<Remote> {
    Remote::new(RemoteConfig {
        url: url.to_string(),
        username: user.to_string(),
        password,
        insecure,
        ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(filters: &[(&str, &str, Option<&str>)]) -> Spec {
        Spec {
            filters: filters
                .iter()
                .map(|(k, v, d)| Filter {
                    kind: k.to_string(),
                    value: v.to_string(),
                    decoration: d.map(str::to_string),
                })
                .collect(),
            ..Spec::default()
        }
    }

    #[test]
    fn run_arguments_begin_with_their_policy() {
        let a = RunArgs {
            policy_id: 7,
            trigger: "event_based".into(),
            event: Some(RunEvent::default()),
        };
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.starts_with(&crate::jobs::policy_args_prefix(7)), "{json}");
        assert!(!json.starts_with(&crate::jobs::policy_args_prefix(70)), "{json}");
    }

    #[test]
    fn filters_select_repositories_tags_and_types() {
        let s = spec(&[
            ("name", "library/**", None),
            ("tag", "v*", None),
            ("tag", "*-rc*", Some("excludes")),
        ]);
        assert!(s.admits_repository("library/app"));
        assert!(s.admits_repository("library/team/app"));
        assert!(!s.admits_repository("other/app"));
        assert!(s.admits_tag("v1.0"));
        assert!(!s.admits_tag("v1.0-rc1"));
        assert!(!s.admits_tag("latest"));
        assert!(s.admits_type("anything"), "no type filter admits every type");
        let t = spec(&[("artifact_type", "application/vnd.oci.image.config.v1+json", None)]);
        assert!(t.admits_type("application/vnd.oci.image.config.v1+json"));
        assert!(!t.admits_type("application/vnd.example.signature"));
        assert_eq!(
            spec(&[("name", "library/app", None)]).literal_repository().as_deref(),
            Some("library/app")
        );
        assert!(spec(&[("name", "library/*", None)]).literal_repository().is_none());
        assert!(spec(&[("label", "x", None)]).check().is_err());
        assert!(spec(&[("name", "", None)]).check().is_err());
    }

    #[test]
    fn destination_names() {
        let mut s = Spec::default();
        assert_eq!(s.destination("a/b/c"), "a/b/c", "no namespace: the same name");
        s.dest_namespace = "mirror".into();
        s.dest_namespace_replace_count = -1;
        assert_eq!(s.destination("a/b/c"), "mirror/c");
        s.dest_namespace_replace_count = 0;
        assert_eq!(s.destination("a/b/c"), "mirror/a/b/c");
        s.dest_namespace_replace_count = 1;
        assert_eq!(s.destination("a/b/c"), "mirror/b/c");
        s.dest_namespace_replace_count = 9;
        assert_eq!(s.destination("a/b/c"), "mirror/c", "never fewer than one component");
    }

    #[test]
    fn spec_checks() {
        let mut s = Spec::default();
        assert!(s.check().is_ok());
        s.trigger.kind = "scheduled".into();
        assert!(s.check().is_err(), "a schedule needs a cron");
        s.trigger.trigger_settings.cron = "0 */5 * * * *".into();
        assert!(s.check().is_ok());
        s.trigger.kind = "hourly".into();
        assert!(s
            .check()
            .unwrap_err()
            .message
            .contains("manual, scheduled or event_based"));
        let s = Spec {
            dest_namespace: "Not Valid".into(),
            ..Spec::default()
        };
        assert!(s.check().is_err());
        // Harbor's JSON reads as it is written.
        let v: Spec = serde_json::from_value(serde_json::json!({
            "dest_namespace": "m", "override": false, "speed": 100,
            "trigger": {"type": "event_based"}, "filters": [{"type": "name", "value": "a/**"}]
        }))
        .unwrap();
        assert!(!v.overwrite);
        assert_eq!(v.trigger.kind, "event_based");
        assert_eq!(v.dest_namespace_replace_count, -1);
    }
}
