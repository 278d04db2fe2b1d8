//! Proxy cache projects: a project whose registry is set mirrors that
//! remote registry. `hub/library/alpine:3` is `library/alpine:3` upstream.
//!
//! A pull of a tag asks upstream what the tag points at (a HEAD), and serves
//! the local copy when it is the same. A pull of something missing is
//! fetched from upstream: a blob's bytes stream to the client while they are
//! stored (hashed as they arrive, committed only when the digest matches;
//! the client's last chunk is held back until then); a manifest is served
//! at once and cached in the background once everything it references is
//! stored. When upstream does not answer, whatever is cached still serves.
//! Pushes into a proxy cache project are refused by the HTTP layer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::{Digest, ErrorCode, ManifestRef, ParsedManifest, Reference, RepoName};
use berth_storage::ByteStream;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::registry::{acceptable, ManifestRead, Registry};
use crate::remote::{Remote, RemoteManifest, TransferError};
use crate::replication::Replicator;
use crate::{Error, Result};

/// How long what a project is (proxy or not) is believed without asking the database.
const PROJECT_TTL: Duration = Duration::from_secs(5);
/// Chunks in flight between upstream, the store and the client.
const CHANNEL_CHUNKS: usize = 8;

/// The registry a proxy cache project mirrors.
pub struct Upstream {
    pub project: String,
    pub url: String,
    remote: Arc<Remote>,
}

impl Upstream {
    /// The upstream name of a repository of the project.
    pub fn repository(&self, repo: &RepoName) -> Result<String> {
        repo.as_str()
            .strip_prefix(&self.project)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::NameUnknown,
                    format!(
                        "{repo} names no upstream repository: pull {}/<repository>",
                        self.project
                    ),
                )
            })
    }
}

struct Known {
    at: Instant,
    upstream: Option<Arc<Upstream>>,
}

type Done = watch::Receiver<Option<bool>>;

pub struct ProxyCache {
    replicator: Arc<Replicator>,
    projects: Mutex<HashMap<String, Known>>,
    /// Clients by registry id, kept while the registry's row is unchanged
    /// (they hold the bearer tokens upstream handed out).
    remotes: Mutex<HashMap<i64, (i64, Arc<Remote>)>>,
    /// Blobs being fetched from upstream: the second asker waits for the first.
    inflight: Arc<Mutex<HashMap<Digest, Done>>>,
    /// Manifests being cached, as `repo@digest`.
    filling: Arc<Mutex<HashSet<String>>>,
}

/// What upstream's failure means to the client.
fn upstream_error(up: &Upstream, e: TransferError) -> Error {
    let code = if e.transient {
        ErrorCode::Unavailable
    } else {
        ErrorCode::Unknown
    };
    Error::new(code, format!("upstream {}: {}", up.url, e.message))
}

fn absent(e: &Error) -> bool {
    matches!(
        e.code,
        ErrorCode::NameUnknown | ErrorCode::ManifestUnknown | ErrorCode::BlobUnknown
    )
}

fn once(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
}

/// Waits for a fetch to end: whether it stored the blob.
async fn settled(done: &mut Done) -> bool {
    done.wait_for(Option::is_some)
        .await
        .map(|v| *v == Some(true))
        .unwrap_or(false)
}

fn receiver_stream(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> ByteStream {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }))
}

impl ProxyCache {
    pub fn new(replicator: Arc<Replicator>) -> Arc<ProxyCache> {
        Arc::new(ProxyCache {
            replicator,
            projects: Mutex::default(),
            remotes: Mutex::default(),
            inflight: Arc::default(),
            filling: Arc::default(),
        })
    }

    fn registry(&self) -> &Arc<Registry> {
        self.replicator.registry()
    }

    /// The upstream of the repository's project, if it is a proxy cache.
    pub async fn upstream(&self, repo: &RepoName) -> Result<Option<Arc<Upstream>>> {
        let project = repo.as_str().split('/').next().unwrap_or_default();
        if let Some(k) = self.projects.lock().unwrap().get(project) {
            if k.at.elapsed() < PROJECT_TTL {
                return Ok(k.upstream.clone());
            }
        }
        let db = self.registry().db();
        let upstream = match db.project_by_name(project).await?.and_then(|p| p.registry_id) {
            None => None,
            Some(id) => {
                let row = db.registry(id).await?.ok_or_else(|| {
                    Error::internal(
                        "proxy cache",
                        format!("project {project} names registry {id}, which is gone"),
                    )
                })?;
                let cached = self
                    .remotes
                    .lock()
                    .unwrap()
                    .get(&id)
                    .filter(|(at, _)| *at == row.updated_at)
                    .map(|(_, r)| r.clone());
                let remote = match cached {
                    Some(r) => r,
                    None => {
                        let r = Arc::new(self.replicator.remote(&row)?);
                        self.remotes.lock().unwrap().insert(id, (row.updated_at, r.clone()));
                        r
                    }
                };
                Some(Arc::new(Upstream {
                    project: project.to_string(),
                    url: row.url,
                    remote,
                }))
            }
        };
        self.projects.lock().unwrap().insert(
            project.to_string(),
            Known {
                at: Instant::now(),
                upstream: upstream.clone(),
            },
        );
        Ok(upstream)
    }

    /// GET or HEAD of a manifest in a proxy cache project.
    pub async fn manifest(
        self: &Arc<Self>,
        up: &Arc<Upstream>,
        repo: &RepoName,
        reference: &Reference,
        accept: &[String],
        with_body: bool,
    ) -> Result<ManifestRead> {
        let up_repo = up.repository(repo)?;
        let local = match self.registry().get_manifest(repo, reference, accept, with_body).await {
            Ok(m) => Some(m),
            Err(e) if absent(&e) => None,
            Err(e) => return Err(e),
        };
        let name = reference.to_string();
        match (reference, local) {
            // Content by digest never changes: what is cached is the answer.
            (Reference::Digest(_), Some(m)) => return Ok(m),
            (Reference::Digest(_), None) => {}
            (Reference::Tag(_), local) => match up.remote.manifest_digest(&up_repo, &name).await {
                Ok(Some(d)) => {
                    if let Some(m) = local.filter(|m| m.digest == d) {
                        return Ok(m);
                    }
                }
                Ok(None) => {
                    return Err(Error::new(
                        ErrorCode::ManifestUnknown,
                        format!("{up_repo}:{name} is not at {}", up.url),
                    ))
                }
                Err(e) => {
                    if let Some(m) = local {
                        tracing::warn!(upstream = %up.url, error = %e, "upstream unreachable: serving {repo}:{name} from the cache");
                        return Ok(m);
                    }
                    return Err(upstream_error(up, e));
                }
            },
        }
        let m = match up.remote.manifest(&up_repo, &name).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(Error::new(
                    ErrorCode::ManifestUnknown,
                    format!("{up_repo}:{name} is not at {}", up.url),
                ))
            }
            Err(e) => return Err(upstream_error(up, e)),
        };
        let media_type = if m.media_type.is_empty() {
            ParsedManifest::parse(None, &m.bytes)
                .map(|p| p.media_type)
                .map_err(|e| Error::new(ErrorCode::ManifestInvalid, format!("upstream's {name}: {e}")))?
        } else {
            m.media_type.clone()
        };
        if !acceptable(&media_type, accept) {
            return Err(Error::new(
                ErrorCode::ManifestUnknown,
                format!("manifest {name} is {media_type}, which the request's Accept header does not include"),
            ));
        }
        let read = ManifestRead {
            digest: m.digest.clone(),
            media_type,
            size: m.bytes.len() as u64,
            body: with_body.then(|| once(m.bytes.clone())),
        };
        self.spawn_fill(up.clone(), repo.clone(), reference.clone(), m);
        Ok(read)
    }

    /// Caches a manifest fetched from upstream, after what it references.
    fn spawn_fill(self: &Arc<Self>, up: Arc<Upstream>, repo: RepoName, reference: Reference, m: RemoteManifest) {
        let key = format!("{repo}@{}:{reference}", m.digest);
        if !self.filling.lock().unwrap().insert(key.clone()) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = this.fill(&up, &repo, &reference, &m).await;
            this.filling.lock().unwrap().remove(&key);
            match r {
                Ok(()) => tracing::info!(
                    repository = %repo, reference = %reference, digest = %m.digest,
                    ms = started.elapsed().as_millis() as u64, "cached from upstream"
                ),
                Err(e) => tracing::warn!(
                    repository = %repo, reference = %reference, error = %e.message,
                    "caching from upstream failed; the next pull tries again"
                ),
            }
        });
    }

    async fn fill(&self, up: &Upstream, repo: &RepoName, reference: &Reference, m: &RemoteManifest) -> Result<()> {
        self.fill_content(up, repo, m).await?;
        let mt = (!m.media_type.is_empty()).then_some(m.media_type.as_str());
        self.registry()
            .put_manifest(repo, reference, mt, m.bytes.clone())
            .await?;
        Ok(())
    }

    /// Stores what a manifest references: blobs, and an index's manifests.
    fn fill_content<'a>(
        &'a self,
        up: &'a Upstream,
        repo: &'a RepoName,
        m: &'a RemoteManifest,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mt = (!m.media_type.is_empty()).then_some(m.media_type.as_str());
            let parsed = ParsedManifest::parse(mt, &m.bytes)
                .map_err(|e| Error::new(ErrorCode::ManifestInvalid, format!("upstream's {}: {e}", m.digest)))?;
            let up_repo = up.repository(repo)?;
            for r in &parsed.references {
                match r {
                    ManifestRef::Blob(d) => self.ensure_blob(up, repo, &d.digest).await?,
                    ManifestRef::Manifest(d) => {
                        let by_digest = Reference::Digest(d.digest.clone());
                        match self.registry().get_manifest(repo, &by_digest, &[], false).await {
                            Ok(_) => continue,
                            Err(e) if absent(&e) => {}
                            Err(e) => return Err(e),
                        }
                        let child = up
                            .remote
                            .manifest(&up_repo, &d.digest.to_string())
                            .await
                            .map_err(|e| upstream_error(up, e))?
                            .ok_or_else(|| {
                                Error::new(ErrorCode::ManifestUnknown, format!("{} is not at {}", d.digest, up.url))
                            })?;
                        self.fill_content(up, repo, &child).await?;
                        let cmt = (!child.media_type.is_empty()).then_some(child.media_type.as_str());
                        self.registry()
                            .put_manifest(repo, &by_digest, cmt, child.bytes.clone())
                            .await?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Makes sure a blob is stored in `repo`: present, fetched by someone
    /// else meanwhile, or fetched now.
    async fn ensure_blob(&self, up: &Upstream, repo: &RepoName, digest: &Digest) -> Result<()> {
        let present = |r: Result<u64>| match r {
            Ok(_) => Ok(true),
            Err(e) if absent(&e) => Ok(false),
            Err(e) => Err(e),
        };
        if present(self.registry().stat_blob(repo, digest).await)? {
            return Ok(());
        }
        let waiting = self.inflight.lock().unwrap().get(digest).cloned();
        if let Some(mut done) = waiting {
            settled(&mut done).await;
            if present(self.registry().stat_blob(repo, digest).await)? {
                return Ok(());
            }
        }
        let (_, _, mut done) = self.fetch(up, repo, digest, false).await?;
        let stored = settled(&mut done).await;
        if stored {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::BlobUnknown,
                format!("blob {digest} from {} could not be stored; see the log", up.url),
            ))
        }
    }

    /// A blob missing from the cache, for a client: its size upstream, and
    /// (for a GET) its bytes, stored as they pass.
    pub async fn blob(
        &self,
        up: &Arc<Upstream>,
        repo: &RepoName,
        digest: &Digest,
        with_body: bool,
    ) -> Result<(u64, Option<ByteStream>)> {
        let up_repo = up.repository(repo)?;
        if !with_body {
            return match up.remote.blob_size(&up_repo, digest).await {
                Ok(Some(size)) => Ok((size, None)),
                Ok(None) => Err(Error::new(
                    ErrorCode::BlobUnknown,
                    format!("blob {digest} is not in {up_repo} at {}", up.url),
                )),
                Err(e) => Err(upstream_error(up, e)),
            };
        }
        // Someone is fetching it already: wait, then serve what was stored.
        let waiting = self.inflight.lock().unwrap().get(digest).cloned();
        if let Some(mut done) = waiting {
            let stored = settled(&mut done).await;
            if stored {
                if let Ok(read) = self.registry().get_blob(repo, digest, None).await {
                    return Ok((read.size, Some(read.stream)));
                }
            }
        }
        let (size, stream, _) = self.fetch(up, repo, digest, true).await?;
        Ok((size, stream))
    }

    /// Starts copying a blob from upstream into `repo`. With `to_client`,
    /// the returned stream carries the same bytes, its last chunk held back
    /// until the stored copy's digest is verified (a mismatch ends the
    /// client's stream with an error instead). `done` turns Some(stored).
    async fn fetch(
        &self,
        up: &Upstream,
        repo: &RepoName,
        digest: &Digest,
        to_client: bool,
    ) -> Result<(u64, Option<ByteStream>, Done)> {
        let up_repo = up.repository(repo)?;
        let (size, mut upstream) = match up.remote.blob(&up_repo, digest).await {
            Ok(x) => x,
            Err(e) if e.not_found => {
                return Err(Error::new(
                    ErrorCode::BlobUnknown,
                    format!("blob {digest} is not in {up_repo} at {}", up.url),
                ))
            }
            Err(e) => return Err(upstream_error(up, e)),
        };
        let (done_tx, done_rx) = watch::channel(None);
        self.inflight.lock().unwrap().insert(digest.clone(), done_rx.clone());
        let (store_tx, store_rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (client_tx, client_rx) = if to_client {
            let (t, r) = mpsc::channel(CHANNEL_CHUNKS);
            (Some(t), Some(receiver_stream(r)))
        } else {
            (None, None)
        };
        let store = {
            let (reg, repo, digest) = (self.registry().clone(), repo.clone(), digest.clone());
            tokio::spawn(async move { reg.put_blob(&repo, &digest, receiver_stream(store_rx)).await })
        };
        let inflight = self.inflight.clone();
        let (digest, url) = (digest.clone(), up.url.clone());
        tokio::spawn(async move {
            let mut client = client_tx;
            let mut held: Option<Bytes> = None;
            let mut storing = true;
            while let Some(chunk) = upstream.next().await {
                match chunk {
                    Ok(b) => {
                        if let Some(prev) = held.replace(b.clone()) {
                            if let Some(c) = &client {
                                if c.send(Ok(prev)).await.is_err() {
                                    // The client went away; the copy goes on.
                                    client = None;
                                }
                            }
                        }
                        if storing && store_tx.send(Ok(b)).await.is_err() {
                            storing = false;
                        }
                        if !storing && client.is_none() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = store_tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        break;
                    }
                }
            }
            drop(store_tx);
            let stored = match store.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.message),
                Err(e) => Err(e.to_string()),
            };
            if let Some(c) = &client {
                let last = match &stored {
                    Ok(()) => held.map(Ok),
                    Err(m) => Some(Err(std::io::Error::other(format!(
                        "blob {digest} from {url} was not stored: {m}"
                    )))),
                };
                if let Some(last) = last {
                    let _ = c.send(last).await;
                }
            }
            if let Err(m) = &stored {
                tracing::warn!(digest = %digest, upstream = %url, error = %m, "a blob from upstream was not stored");
            }
            inflight.lock().unwrap().remove(&digest);
            let _ = done_tx.send(Some(stored.is_ok()));
        });
        Ok((size, client_rx, done_rx))
    }
}
