//! Push, pull and delete, in the order that keeps a crash harmless:
//! bytes are made durable in storage first, and only then does a database
//! commit make them visible. A crash between the two leaves an unreferenced
//! file, never a visible name that points at nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_db::{now_ms, Db, ManifestRecord, ManifestReference, ManifestRow};
use berth_oci::{
    media_types, Algorithm, Digest, ErrorCode, Hasher, ManifestRef, ParsedManifest, Reference, RepoName, Tag, UploadId,
};
use berth_storage::{BlobStore, ByteStream, StorageError};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::cache::{ContentCache, ResolveCache};
use crate::policy;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest manifest accepted; larger ones get 413.
    pub max_manifest_bytes: usize,
    /// Largest page of tags or repositories a client may ask for.
    pub max_page: usize,
    /// Catalog page size when the client names none.
    pub default_catalog_page: usize,
    /// How long a resolved tag may be answered from memory. Changes made
    /// through this process are seen at once; this bounds how long one made
    /// through another replica can go unseen. Zero asks the database each time.
    pub resolve_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 << 20,
            max_page: 10_000,
            default_catalog_page: 100,
            resolve_ttl: Duration::from_secs(1),
        }
    }
}

/// The running SHA-256 of an upload, valid while `offset` equals its length.
struct RunningHash {
    offset: u64,
    hasher: Hasher,
}

/// Per-upload state: a lock that serialises requests on one upload, and the
/// running hash that saves re-reading the data at the end.
type UploadSlot = Arc<tokio::sync::Mutex<Option<RunningHash>>>;

pub struct Registry {
    db: Db,
    store: Arc<dyn BlobStore>,
    limits: Limits,
    uploads: Mutex<HashMap<UploadId, UploadSlot>>,
    /// When this process last wrote each manifest's pull time, so that a
    /// busy manifest costs one database write a minute, not one per GET.
    pulls: Mutex<HashMap<(i64, String), std::time::Instant>>,
    /// Manifest bytes by digest, so that a pull does not go to storage.
    manifests: ContentCache,
    /// Tag and digest resolutions, briefly.
    resolved: ResolveCache,
    events: tokio::sync::broadcast::Sender<Event>,
}

/// Manifests cached in memory: at most this many bytes in all, and each at
/// most [`MANIFEST_CACHE_ENTRY`]. Typical image manifests are 0.5 to 3 KiB.
const MANIFEST_CACHE_BYTES: usize = 8 << 20;
const MANIFEST_CACHE_ENTRY: usize = 256 << 10;
/// Tag and digest resolutions kept at most.
const RESOLVE_CACHE_ENTRIES: usize = 10_000;

/// Bytes of a body handed to the hashing thread at a time, and how many such
/// batches may wait: about 2 MiB per upload at most.
const HASH_BATCH: usize = 256 << 10;
const HASH_QUEUE: usize = 4;

/// Pull times are kept to this resolution: one write per manifest per minute at most.
const PULL_TIME_RESOLUTION_MS: i64 = 60_000;

/// A blob or a manifest being read: total size, the range served, the bytes.
pub struct BlobRead {
    pub size: u64,
    pub range: Option<(u64, u64)>,
    pub stream: ByteStream,
}

pub struct ManifestRead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// None for HEAD.
    pub body: Option<ByteStream>,
}

pub struct ManifestPut {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// What happened to an artifact, for whoever listens (replication, webhooks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Push,
    Delete,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    pub repository: String,
    /// The tag or digest the client named.
    pub reference: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// The manifest a pushed referrer (a signature, an SBOM) refers to.
    pub subject: Option<String>,
}

/// Events a slow listener may fall behind by before it misses some.
const EVENT_BACKLOG: usize = 1024;

/// One page of names, and the `last` of the next page when there is one.
pub struct Page {
    pub items: Vec<String>,
    pub next: Option<String>,
}

fn storage_error(context: &str, e: StorageError) -> Error {
    match e {
        StorageError::NotFound => Error::internal(context, "data missing from storage"),
        StorageError::RangeNotSatisfiable => Error::code(ErrorCode::RangeInvalid),
        StorageError::Body(e) => Error::new(
            ErrorCode::BlobUploadInvalid,
            format!("reading the request body failed: {e}"),
        ),
        other => Error::internal(context, other),
    }
}

fn random_id() -> UploadId {
    UploadId::from_random(*uuid::Uuid::new_v4().as_bytes())
}

impl Registry {
    pub fn new(db: Db, store: Arc<dyn BlobStore>, limits: Limits) -> Registry {
        Registry {
            db,
            store,
            uploads: Mutex::new(HashMap::new()),
            pulls: Mutex::new(HashMap::new()),
            manifests: ContentCache::new(MANIFEST_CACHE_BYTES, MANIFEST_CACHE_ENTRY),
            resolved: ResolveCache::new(limits.resolve_ttl, RESOLVE_CACHE_ENTRIES),
            limits,
            events: tokio::sync::broadcast::channel(EVENT_BACKLOG).0,
        }
    }

    /// Pushes and deletes committed through this process, from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, e: Event) {
        // No listener is not an error.
        let _ = self.events.send(e);
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn repo_id(&self, name: &RepoName) -> Result<i64> {
        self.db
            .repository_id(name.as_str())
            .await?
            .ok_or_else(|| Error::new(ErrorCode::NameUnknown, format!("repository {name} is not known")))
    }

    fn slot(&self, id: &UploadId) -> UploadSlot {
        self.uploads.lock().unwrap().entry(id.clone()).or_default().clone()
    }

    /// Whether this process should write the pull time of a manifest now.
    fn pull_due(&self, repo: i64, digest: &str) -> bool {
        let every = Duration::from_millis(PULL_TIME_RESOLUTION_MS as u64);
        let now = std::time::Instant::now();
        let mut map = self.pulls.lock().unwrap();
        let key = (repo, digest.to_string());
        if map.get(&key).is_some_and(|t| now.duration_since(*t) < every) {
            return false;
        }
        if map.len() >= 100_000 {
            map.retain(|_, t| now.duration_since(*t) < every);
        }
        map.insert(key, now);
        true
    }

    fn forget(&self, id: &UploadId) {
        self.uploads.lock().unwrap().remove(id);
    }

    // ---- guard rails ----

    /// Refuses to add an object of `size` bytes (and, for a manifest, one
    /// artifact) to the repository's project when that would exceed one of
    /// the project's quotas. Objects the project already holds add nothing.
    /// Checked before the write, so concurrent pushes may overshoot a limit
    /// by what they add between them.
    async fn check_quota(&self, repo: &RepoName, digest: &str, size: i64, artifact: bool) -> Result<()> {
        let Some((project, _)) = repo.as_str().split_once('/') else {
            return Ok(());
        };
        let Some(p) = self.db.project_by_name(project).await? else {
            return Ok(());
        };
        let counts = artifact && p.count_limit >= 0;
        if (p.storage_limit < 0 && !counts) || self.db.project_holds(project, digest).await? {
            return Ok(());
        }
        if counts {
            let n = self.db.project_artifact_count(project).await?;
            if n + 1 > p.count_limit {
                return Err(policy::count_quota_error(project, n, p.count_limit));
            }
        }
        if p.storage_limit >= 0 {
            let used = self.db.project_storage(project).await?;
            if used + size > p.storage_limit {
                return Err(policy::storage_quota_error(project, used, size, p.storage_limit));
            }
        }
        Ok(())
    }

    /// Refuses when an immutability rule covers the tag.
    pub async fn check_tag_mutable(&self, repo: &RepoName, tag: &str, what: &str) -> Result<()> {
        let rules = self.db.immutable_rules_for_repository(repo.as_str()).await?;
        match policy::covering(&rules, repo, tag) {
            Some(rule) => Err(policy::immutable_error(repo, tag, Some(rule), what)),
            None => Ok(()),
        }
    }

    /// Refuses when an immutability rule covers any tag of the repository
    /// (or, with `digest`, any tag of that manifest).
    pub async fn check_tags_mutable(&self, repo: &RepoName, repo_id: i64, digest: Option<&str>) -> Result<()> {
        let rules = self.db.immutable_rules_for_repository(repo.as_str()).await?;
        if rules.is_empty() {
            return Ok(());
        }
        let tags: Vec<String> = match digest {
            Some(d) => self
                .db
                .manifest_tags(repo_id, d)
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect(),
            None => self.db.tags(repo_id, None, i64::MAX).await?,
        };
        for t in &tags {
            if let Some(rule) = policy::covering(&rules, repo, t) {
                return Err(policy::immutable_error(repo, t, Some(rule), "deleted"));
            }
        }
        Ok(())
    }

    // ---- blobs ----

    /// Size of a blob of the repository.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let id = self
            .repo_id(repo)
            .await
            .map_err(|_| Error::code(ErrorCode::BlobUnknown))?;
        match self.db.repository_blob(id, &digest.to_string()).await? {
            Some(size) => Ok(size as u64),
            None => Err(Error::code(ErrorCode::BlobUnknown)),
        }
    }

    /// Reads a blob, or an inclusive byte range of it.
    pub async fn get_blob(&self, repo: &RepoName, digest: &Digest, range: Option<(u64, u64)>) -> Result<BlobRead> {
        let size = self.stat_blob(repo, digest).await?;
        let r = self
            .store
            .get(digest, range)
            .await
            .map_err(|e| storage_error("reading blob", e))?;
        debug_assert_eq!(r.size, size);
        Ok(BlobRead {
            size: r.size,
            range,
            stream: r.stream,
        })
    }

    /// Where the client may fetch a blob directly (a presigned URL), when the
    /// storage backend is configured to hand those out. Call after
    /// [`Registry::stat_blob`], which checks the repository holds the blob.
    pub async fn blob_redirect(&self, digest: &Digest) -> Result<Option<String>> {
        self.store
            .redirect_url(digest)
            .await
            .map_err(|e| storage_error("presigning a blob URL", e))
    }

    /// Unlinks a blob from the repository. Refused while a manifest here uses it.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let id = self
            .repo_id(repo)
            .await
            .map_err(|_| Error::code(ErrorCode::BlobUnknown))?;
        let d = digest.to_string();
        let users = self.db.blob_referrers(id, &d).await?;
        if let Some(first) = users.first() {
            return Err(Error::new(
                ErrorCode::InUse,
                format!("blob {d} is used by manifest {first}; delete the manifest first"),
            ));
        }
        if !self.db.unlink_blob(id, &d).await? {
            return Err(Error::code(ErrorCode::BlobUnknown));
        }
        Ok(())
    }

    /// Links a blob already in `from` into `repo`. False when `from` lacks it.
    pub async fn mount_blob(&self, repo: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool> {
        let Some(from_id) = self.db.repository_id(from.as_str()).await? else {
            return Ok(false);
        };
        let d = digest.to_string();
        if self.db.repository_blob(from_id, &d).await?.is_none() {
            return Ok(false);
        }
        let size = self.db.repository_blob(from_id, &d).await?.unwrap_or(0);
        if self.check_quota(repo, &d, size, false).await.is_err() {
            // The client uploads instead, and is told then why it cannot.
            return Ok(false);
        }
        let to = self.db.ensure_repository(repo.as_str()).await?;
        // Touches the blob as it links it; if collection took it meanwhile,
        // the client is told to upload instead.
        Ok(self.db.link_existing_blob(to, &d).await?.is_some())
    }

    // ---- uploads ----

    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadId> {
        let repo_id = self.db.ensure_repository(repo.as_str()).await?;
        let id = random_id();
        self.store
            .upload_create(&id)
            .await
            .map_err(|e| storage_error("creating upload", e))?;
        self.db.create_upload(id.as_str(), repo_id).await?;
        *self.slot(&id).lock().await = Some(RunningHash {
            offset: 0,
            hasher: Algorithm::Sha256.hasher(),
        });
        Ok(id)
    }

    /// Checks that the upload exists and belongs to the repository.
    async fn check_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        match self.db.upload(id.as_str()).await? {
            Some(u) if u.repository == repo.as_str() => Ok(()),
            _ => Err(Error::code(ErrorCode::BlobUploadUnknown)),
        }
    }

    /// Appends to an upload under its lock, keeping the running hash when it can.
    async fn append_locked(
        &self,
        id: &UploadId,
        state: &mut Option<RunningHash>,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        let current = self.store.upload_size(id).await.map_err(|e| match e {
            StorageError::NotFound => Error::code(ErrorCode::BlobUploadUnknown),
            e => storage_error("upload size", e),
        })?;
        if let Some(start) = start {
            if start != current {
                return Err(range_error(
                    current,
                    format!("chunk starts at {start}, but the upload holds {current} bytes"),
                ));
            }
        }
        let running = state.take().filter(|r| r.offset == current);
        // Hash on a thread of its own, beside the one that writes to disk, so
        // that receiving, hashing and writing overlap. The queue is short:
        // memory per upload stays constant.
        let (body, hashing) = match running {
            Some(r) => {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(HASH_QUEUE);
                let mut hasher = r.hasher;
                let task = tokio::task::spawn_blocking(move || {
                    while let Some(batch) = rx.blocking_recv() {
                        for b in batch {
                            hasher.update(&b);
                        }
                    }
                    hasher
                });
                // Chunks go over in batches, so that small network reads do
                // not each cost a wake-up of the hashing thread.
                let pending = Arc::new(Mutex::new((Vec::new(), 0usize)));
                let (tap, sender) = (pending.clone(), tx.clone());
                let body: ByteStream = Box::pin(body.then(move |chunk| {
                    let batch = match &chunk {
                        Ok(bytes) => {
                            let mut p = tap.lock().unwrap();
                            p.0.push(bytes.clone());
                            p.1 += bytes.len();
                            (p.1 >= HASH_BATCH).then(|| {
                                p.1 = 0;
                                std::mem::take(&mut p.0)
                            })
                        }
                        Err(_) => None,
                    };
                    let tx = sender.clone();
                    async move {
                        if let Some(batch) = batch {
                            // The receiver lives until every sender is dropped.
                            let _ = tx.send(batch).await;
                        }
                        chunk
                    }
                }));
                (body, Some((task, tx, pending)))
            }
            None => (body, None),
        };
        let appended = self.store.upload_append(id, current, body).await;
        let hasher = match hashing {
            Some((task, tx, pending)) => {
                let rest = std::mem::take(&mut pending.lock().unwrap().0);
                let _ = tx.send(rest).await;
                drop(tx);
                Some(task.await.map_err(|e| Error::internal("hashing upload", e))?)
            }
            None => None,
        };
        match appended {
            Ok(end) => {
                *state = hasher.map(|hasher| RunningHash { offset: end, hasher });
                self.db.touch_upload(id.as_str()).await?;
                Ok(end)
            }
            Err(StorageError::OffsetMismatch { actual, .. }) => Err(range_error(
                actual,
                "the upload changed while this chunk was sent".into(),
            )),
            Err(StorageError::NotFound) => Err(Error::code(ErrorCode::BlobUploadUnknown)),
            // The running hash saw bytes that were cut back; it is gone and the
            // upload will be re-read at the end if it is ever finished.
            Err(e) => Err(storage_error("appending to upload", e)),
        }
    }

    /// PATCH: appends a chunk. `start` is the first byte of `Content-Range`, if sent.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        self.check_upload(repo, id).await?;
        let slot = self.slot(id);
        let mut state = slot.lock().await;
        self.append_locked(id, &mut state, start, body).await
    }

    /// GET on an upload: how many bytes it holds.
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<u64> {
        self.check_upload(repo, id).await?;
        self.store.upload_size(id).await.map_err(|e| match e {
            StorageError::NotFound => Error::code(ErrorCode::BlobUploadUnknown),
            e => storage_error("upload size", e),
        })
    }

    /// PUT: appends an optional last chunk, verifies the digest, and publishes the blob.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        start: Option<u64>,
        body: Option<ByteStream>,
    ) -> Result<u64> {
        self.check_upload(repo, id).await?;
        let slot = self.slot(id);
        let mut state = slot.lock().await;
        let size = match body {
            Some(b) => self.append_locked(id, &mut state, start, b).await?,
            None => self
                .store
                .upload_size(id)
                .await
                .map_err(|e| storage_error("upload size", e))?,
        };
        let actual = match state.take() {
            Some(r) if r.offset == size && digest.algorithm() == Algorithm::Sha256 => r.hasher.finish(),
            _ => self.rehash(id, digest.algorithm()).await?,
        };
        if &actual != digest {
            // Keep the upload: the client may still send the right digest.
            let hasher = self.rehash_state(id, size).await;
            *state = hasher;
            return Err(Error::new(
                ErrorCode::DigestInvalid,
                format!("content digest is {actual}, not {digest}"),
            )
            .with_detail(serde_json::json!({"expected": digest.to_string(), "actual": actual.to_string()})));
        }
        let d = digest.to_string();
        // The upload stays, so that a retry after the quota is raised can finish it.
        self.check_quota(repo, &d, size as i64, false).await?;
        // The row first, touched now: garbage collection never removes what
        // was touched within its window, so the bytes published next are safe.
        self.db.touch_object(&d, size as i64).await?;
        self.store
            .upload_commit(id, digest)
            .await
            .map_err(|e| storage_error("committing upload", e))?;
        let repo_id = self.repo_id(repo).await?;
        self.link_published(repo_id, digest, size).await?;
        self.db.delete_upload(id.as_str()).await?;
        drop(state);
        self.forget(id);
        Ok(size)
    }

    /// Links a just-published blob into a repository, touching its row. A
    /// collection with a window shorter than the publish took may have
    /// removed the row (and perhaps the bytes) meanwhile: then the row is
    /// made again and the bytes looked for; the client is told the push
    /// failed only if they are gone. Whatever the window, a blob is never
    /// linked without its bytes.
    async fn link_published(&self, repo_id: i64, digest: &Digest, size: u64) -> Result<()> {
        let d = digest.to_string();
        for _ in 0..3 {
            if self.db.link_existing_blob(repo_id, &d).await?.is_some() {
                // Linked and touched; the bytes were published before, and a
                // collection that removed them would have removed the row too.
                if self.store.stat(digest).await.is_ok() {
                    return Ok(());
                }
                return Err(Error::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("{d} was removed by garbage collection while this upload finished; push it again"),
                ));
            }
            self.db.touch_object(&d, size as i64).await?;
        }
        Err(Error::new(
            ErrorCode::BlobUploadInvalid,
            format!("{d} was removed by garbage collection while this upload finished; push it again"),
        ))
    }

    async fn rehash(&self, id: &UploadId, algorithm: Algorithm) -> Result<Digest> {
        let mut stream = self
            .store
            .upload_read(id)
            .await
            .map_err(|e| storage_error("reading upload", e))?;
        let mut h = algorithm.hasher();
        while let Some(chunk) = stream.next().await {
            h.update(&chunk.map_err(|e| storage_error("reading upload", StorageError::Io(e)))?);
        }
        Ok(h.finish())
    }

    async fn rehash_state(&self, id: &UploadId, size: u64) -> Option<RunningHash> {
        let mut stream = self.store.upload_read(id).await.ok()?;
        let mut h = Algorithm::Sha256.hasher();
        while let Some(chunk) = stream.next().await {
            h.update(&chunk.ok()?);
        }
        Some(RunningHash {
            offset: size,
            hasher: h,
        })
    }

    /// POST `?digest=`: a whole blob in one request.
    pub async fn put_blob(&self, repo: &RepoName, digest: &Digest, body: ByteStream) -> Result<u64> {
        let id = self.start_upload(repo).await?;
        match self.finish_upload(repo, &id, digest, None, Some(body)).await {
            Ok(size) => Ok(size),
            Err(e) => {
                let _ = self.cancel_upload(repo, &id).await;
                Err(e)
            }
        }
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        self.check_upload(repo, id).await?;
        let slot = self.slot(id);
        let _guard = slot.lock().await;
        self.store
            .upload_cancel(id)
            .await
            .map_err(|e| storage_error("cancelling upload", e))?;
        self.db.delete_upload(id.as_str()).await?;
        self.forget(id);
        Ok(())
    }

    /// Removes uploads not written to for `max_age`, and upload files that
    /// have no session (left by a crash between creating the two).
    pub async fn purge_uploads(&self, max_age: Duration) -> Result<usize> {
        let cutoff = now_ms() - max_age.as_millis() as i64;
        let mut purged = 0;
        for id in self.db.stale_uploads(cutoff).await? {
            let Ok(uid) = id.parse::<UploadId>() else {
                continue;
            };
            let slot = self.slot(&uid);
            let Ok(_guard) = slot.try_lock() else {
                continue;
            };
            self.store
                .upload_cancel(&uid)
                .await
                .map_err(|e| storage_error("purging upload", e))?;
            self.db.delete_upload(&id).await?;
            self.forget(&uid);
            purged += 1;
        }
        let files = self
            .store
            .upload_list()
            .await
            .map_err(|e| storage_error("listing uploads", e))?;
        let cutoff_time = std::time::SystemTime::now() - max_age;
        for (uid, modified) in files {
            if modified < cutoff_time && self.db.upload(uid.as_str()).await?.is_none() {
                self.store
                    .upload_cancel(&uid)
                    .await
                    .map_err(|e| storage_error("purging upload", e))?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    // ---- manifests ----

    /// A manifest's bytes, from memory or from storage. Bytes read from
    /// storage are checked against the digest before they are served or kept.
    async fn manifest_bytes(&self, digest: &Digest, size: u64) -> Result<Bytes> {
        if let Some(b) = self.manifests.get(digest) {
            return Ok(b);
        }
        let mut r = self
            .store
            .get(digest, None)
            .await
            .map_err(|e| storage_error("reading manifest", e))?;
        let mut buf = bytes::BytesMut::with_capacity(size.min(self.limits.max_manifest_bytes as u64) as usize);
        while let Some(chunk) = r.stream.next().await {
            let chunk = chunk.map_err(|e| storage_error("reading manifest", StorageError::Io(e)))?;
            if buf.len() + chunk.len() > self.limits.max_manifest_bytes.max(size as usize) {
                return Err(Error::internal(
                    "reading manifest",
                    "stored manifest is larger than recorded",
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        let bytes = buf.freeze();
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(Error::internal(
                "reading manifest",
                format!("stored bytes of {digest} hash to {actual}"),
            ));
        }
        self.manifests.insert(digest, bytes.clone());
        Ok(bytes)
    }

    /// GET or HEAD of a manifest. A GET records the pull time, to the minute. `accept` is the client's list of media types
    /// (empty: anything).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &[String],
        with_body: bool,
    ) -> Result<ManifestRead> {
        let unknown = || {
            Error::new(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in {repo}"),
            )
        };
        let name = reference.to_string();
        let changes = self.db.changes();
        let found = match self.resolved.get(repo.as_str(), &name, changes) {
            Some(hit) => Some(hit),
            None => {
                let by_digest = matches!(reference, Reference::Digest(_));
                let found = self
                    .db
                    .named_manifest(repo.as_str(), &name, by_digest)
                    .await?
                    .map(|(id, row)| (id, Arc::new(row)));
                if let Some((id, row)) = &found {
                    self.resolved.insert(repo.as_str(), &name, changes, *id, row.clone());
                }
                found
            }
        };
        let Some((repo_id, row)) = found else {
            // Tell an unknown repository from an unknown manifest.
            self.repo_id(repo).await?;
            return Err(unknown());
        };
        if !acceptable(&row.media_type, accept) {
            return Err(Error::new(
                ErrorCode::ManifestUnknown,
                format!(
                    "manifest {reference} is {}, which the request's Accept header does not include",
                    row.media_type
                ),
            ));
        }
        let digest: Digest = row.digest.parse().map_err(|e| Error::internal("stored digest", e))?;
        let body = if with_body {
            let bytes = self.manifest_bytes(&digest, row.size as u64).await?;
            // A GET is a pull; noting it must not slow the answer down.
            if self.pull_due(repo_id, &row.digest) {
                let (db, d) = (self.db.clone(), row.digest.clone());
                tokio::spawn(async move {
                    if let Err(e) = db
                        .record_pull(repo_id, &d, berth_db::now_ms(), PULL_TIME_RESOLUTION_MS)
                        .await
                    {
                        tracing::debug!(error = %e, "recording a pull time failed");
                    }
                });
            }
            let stream: ByteStream = Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
            Some(stream)
        } else {
            None
        };
        Ok(ManifestRead {
            digest,
            media_type: row.media_type.clone(),
            size: row.size as u64,
            body,
        })
    }

    /// PUT of a manifest by tag or digest.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<ManifestPut> {
        if body.len() > self.limits.max_manifest_bytes {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!(
                    "manifest is {} bytes; the limit is {}",
                    body.len(),
                    self.limits.max_manifest_bytes
                ),
            ));
        }
        let parsed = ParsedManifest::parse(content_type, &body)
            .map_err(|e| Error::new(ErrorCode::ManifestInvalid, e.to_string()))?;
        let (digest, tag) = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &body);
                if &actual != d {
                    return Err(Error::new(
                        ErrorCode::DigestInvalid,
                        format!("manifest digest is {actual}, not {d}"),
                    ));
                }
                (actual, None)
            }
            Reference::Tag(t) => (Digest::sha256_of(&body), Some(t.clone())),
        };
        let repo_id = self.db.ensure_repository(repo.as_str()).await?;
        let mut references = Vec::with_capacity(parsed.references.len());
        for r in &parsed.references {
            let (desc, is_manifest) = match r {
                ManifestRef::Blob(d) => (d, false),
                ManifestRef::Manifest(d) => (d, true),
            };
            let d = desc.digest.to_string();
            let size = if is_manifest {
                self.db.manifest(repo_id, &d).await?.map(|m| m.size)
            } else {
                self.db.repository_blob(repo_id, &d).await?
            };
            match size {
                None => {
                    let what = if is_manifest { "manifest" } else { "blob" };
                    return Err(Error::new(
                        ErrorCode::ManifestBlobUnknown,
                        format!("{what} {d} is not in {repo}; push it first"),
                    )
                    .with_detail(serde_json::json!({"digest": d})));
                }
                Some(s) if s != desc.size => {
                    return Err(Error::new(
                        ErrorCode::ManifestInvalid,
                        format!("descriptor for {d} says {} bytes, but it has {s}", desc.size),
                    ));
                }
                Some(_) => {}
            }
            references.push(ManifestReference { digest: d, is_manifest });
        }
        // The bytes' row, touched now; then the bytes, durable; then the
        // database commit that makes them visible, which touches the row
        // again. A collection may remove the bytes in between (its window is
        // shorter than this took): then they are stored again, from memory.
        let record = ManifestRecord {
            row: ManifestRow {
                digest: digest.to_string(),
                media_type: parsed.media_type.clone(),
                artifact_type: parsed.artifact_type.clone(),
                subject: parsed.subject.as_ref().map(|s| s.digest.to_string()),
                size: body.len() as i64,
                annotations: parsed
                    .annotations
                    .as_ref()
                    .map(|a| serde_json::to_string(a).expect("annotations serialise")),
                pushed_at: now_ms(),
            },
            references,
            tag: tag.map(|t: Tag| t.as_str().to_string()),
        };
        let own = digest.to_string();
        let immutable = match &record.tag {
            Some(t) => {
                let rules = self.db.immutable_rules_for_repository(repo.as_str()).await?;
                policy::covering(&rules, repo, t).cloned()
            }
            None => None,
        };
        self.check_quota(repo, &own, body.len() as i64, true).await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.db.touch_object(&own, body.len() as i64).await?;
            self.store
                .put(&digest, body.clone())
                .await
                .map_err(|e| storage_error("storing manifest", e))?;
            match self
                .db
                .put_manifest_guarded(repo_id, &record, immutable.is_some())
                .await
            {
                Ok(()) => break,
                Err(berth_db::DbError::Immutable(t)) => {
                    return Err(policy::immutable_error(repo, &t, immutable.as_ref(), "overwritten"));
                }
                Err(berth_db::DbError::Missing(d)) if d == own && attempts < 3 => continue,
                Err(berth_db::DbError::Missing(d)) => {
                    return Err(Error::new(
                        ErrorCode::ManifestBlobUnknown,
                        format!("{d} is no longer stored in {repo} (garbage collection removed it); push it again"),
                    )
                    .with_detail(serde_json::json!({"digest": d})));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.manifests.insert(&digest, body);
        self.emit(Event {
            kind: EventKind::Push,
            repository: repo.to_string(),
            reference: reference.to_string(),
            tag: record.tag.clone(),
            digest: Some(digest.to_string()),
            subject: record.row.subject.clone(),
        });
        Ok(ManifestPut {
            digest,
            subject: parsed.subject.map(|s| s.digest),
        })
    }

    /// DELETE of a manifest: by tag removes the tag; by digest removes the
    /// manifest and every tag on it.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let repo_id = self.repo_id(repo).await?;
        let unknown = || {
            Error::new(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in {repo}"),
            )
        };
        match reference {
            Reference::Tag(t) => {
                self.check_tag_mutable(repo, t.as_str(), "deleted").await?;
                if !self.db.delete_tag(repo_id, t.as_str()).await? {
                    return Err(unknown());
                }
                self.emit(Event {
                    kind: EventKind::Delete,
                    repository: repo.to_string(),
                    reference: t.to_string(),
                    tag: Some(t.to_string()),
                    digest: None,
                    subject: None,
                });
            }
            Reference::Digest(d) => {
                let d = d.to_string();
                let parents = self.db.manifest_parents(repo_id, &d).await?;
                if let Some(p) = parents.first() {
                    return Err(Error::new(
                        ErrorCode::InUse,
                        format!("manifest {d} is part of index {p}; delete the index first"),
                    ));
                }
                self.check_tags_mutable(repo, repo_id, Some(&d)).await?;
                let tags = self.db.manifest_tags(repo_id, &d).await?;
                if !self.db.delete_manifest(repo_id, &d).await? {
                    return Err(unknown());
                }
                // Listeners hear of each tag that went with it.
                for t in tags {
                    self.emit(Event {
                        kind: EventKind::Delete,
                        repository: repo.to_string(),
                        reference: t.name.clone(),
                        tag: Some(t.name),
                        digest: Some(d.clone()),
                        subject: None,
                    });
                }
            }
        }
        Ok(())
    }

    /// The referrers of `subject` as an OCI image index (JSON bytes).
    pub async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Bytes> {
        let rows = match self.db.repository_id(repo.as_str()).await? {
            Some(id) => self.db.referrers(id, &subject.to_string(), artifact_type).await?,
            None => Vec::new(),
        };
        let manifests: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|r| {
                let mut d = serde_json::json!({
                    "mediaType": r.media_type,
                    "digest": r.digest,
                    "size": r.size,
                });
                if let Some(t) = r.artifact_type {
                    d["artifactType"] = t.into();
                }
                if let Some(a) = r
                    .annotations
                    .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
                {
                    d["annotations"] = a;
                }
                d
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": manifests,
        });
        Ok(Bytes::from(serde_json::to_vec(&index).expect("index serialises")))
    }

    // ---- listings ----

    fn page_size(&self, n: Option<usize>, default: usize) -> usize {
        n.unwrap_or(default).min(self.limits.max_page)
    }

    /// Tags of a repository. Without `n`, all of them.
    pub async fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let repo_id = self.repo_id(repo).await?;
        let limit = match n {
            Some(n) => n.min(self.limits.max_page),
            None => usize::MAX / 2,
        };
        if limit == 0 {
            return Ok(Page {
                items: vec![],
                next: None,
            });
        }
        let mut items = self.db.tags(repo_id, last, (limit as i64).saturating_add(1)).await?;
        Ok(paginate(&mut items, limit))
    }

    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let limit = self.page_size(n, self.limits.default_catalog_page);
        if limit == 0 {
            return Ok(Page {
                items: vec![],
                next: None,
            });
        }
        let mut items = self.db.repositories(last, limit as i64 + 1).await?;
        Ok(paginate(&mut items, limit))
    }
}

fn paginate(items: &mut Vec<String>, limit: usize) -> Page {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().cloned()
    } else {
        None
    };
    Page {
        items: std::mem::take(items),
        next,
    }
}

fn range_error(current: u64, message: String) -> Error {
    Error::new(ErrorCode::RangeInvalid, message).with_detail(serde_json::json!({ "offset": current }))
}

/// Whether a stored manifest of `media_type` may be served to a client that
/// accepts `accept`. A client that names no manifest type takes anything.
pub(crate) fn acceptable(media_type: &str, accept: &[String]) -> bool {
    let names_a_manifest_type = accept.iter().any(|a| media_types::is_supported(a));
    !names_a_manifest_type || accept.iter().any(|a| a == media_type || a == "*/*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_manifest_costs_one_pull_write_a_minute() {
        let t = berth_db::testing::sqlite().await;
        let reg = Registry::new(
            t.db.clone(),
            Arc::new(berth_storage::MemoryStore::default()),
            Limits::default(),
        );
        assert!(reg.pull_due(1, "sha256:a"));
        assert!(!reg.pull_due(1, "sha256:a"), "a second write within the minute");
        assert!(reg.pull_due(1, "sha256:b"));
        assert!(reg.pull_due(2, "sha256:a"));
    }

    #[test]
    fn accept_negotiation() {
        let oci = media_types::OCI_MANIFEST.to_string();
        let docker = media_types::DOCKER_MANIFEST.to_string();
        assert!(acceptable(&oci, &[]));
        assert!(acceptable(&oci, &["application/json".into()]));
        assert!(acceptable(&oci, &[docker.clone(), oci.clone()]));
        assert!(!acceptable(&oci, std::slice::from_ref(&docker)));
        assert!(acceptable(&oci, &[docker, "*/*".into()]));
    }

    #[test]
    fn pages() {
        let mut v: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let p = paginate(&mut v, 2);
        assert_eq!(p.items, ["a", "b"]);
        assert_eq!(p.next.as_deref(), Some("b"));
        let mut v: Vec<String> = ["a"].map(String::from).to_vec();
        assert!(paginate(&mut v, 2).next.is_none());
    }
}
