//! A client of another registry's distribution API, for replication: token
//! or Basic authentication as the remote asks, streamed blob transfers,
//! byte-exact manifests, and errors that say whether trying again may help
//! (429, 5xx and broken connections) and how long the remote asked to wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::{media_types, Algorithm, Descriptor, Digest};
use berth_storage::ByteStream;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LINK, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};

/// How to reach a remote registry.
#[derive(Clone, Debug, Default)]
pub struct RemoteConfig {
    pub url: String,
    pub username: String,
    pub password: Option<String>,
    /// Accept any certificate (self-signed test setups).
    pub insecure: bool,
    /// A CA (PEM) to trust besides the system's.
    pub ca_pem: Option<String>,
}

/// A failed step of a transfer. `transient` says another attempt may work.
#[derive(Clone, Debug)]
pub struct TransferError {
    pub message: String,
    pub transient: bool,
    /// What the remote asked for in `Retry-After`.
    pub retry_after: Option<Duration>,
    /// The remote answered 404.
    pub not_found: bool,
}

impl TransferError {
    pub fn permanent(message: impl Into<String>) -> TransferError {
        TransferError {
            message: message.into(),
            transient: false,
            retry_after: None,
            not_found: false,
        }
    }

    pub fn transient(message: impl Into<String>) -> TransferError {
        TransferError {
            message: message.into(),
            transient: true,
            retry_after: None,
            not_found: false,
        }
    }
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::Error> for TransferError {
    fn from(e: crate::Error) -> TransferError {
        TransferError::permanent(e.message)
    }
}

pub type TResult<T> = std::result::Result<T, TransferError>;

/// Retries with exponential backoff, waiting at least what `Retry-After` asked.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Attempts in all, at least 1.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Retry {
    /// The wait before attempt `n + 1` (n from 1).
    pub fn delay(&self, n: u32, asked: Option<Duration>) -> Duration {
        let backoff = self.base.saturating_mul(1 << (n - 1).min(16)).min(self.max);
        // The remote's own figure wins when it asks for longer; never wait
        // past `max` on its say-so either.
        asked.map_or(backoff, |a| a.min(self.max).max(backoff))
    }

    /// Runs `op` until it succeeds, fails permanently, or attempts run out.
    /// `note` hears of each retry.
    pub async fn run<T, F, Fut>(&self, what: &str, note: &(dyn Fn(String) + Sync), mut op: F) -> TResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = TResult<T>>,
    {
        let mut n = 0;
        loop {
            n += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.transient && n < self.attempts.max(1) => {
                    let wait = self.delay(n, e.retry_after);
                    note(format!(
                        "{what}: {} (attempt {n} of {}); retrying in {} ms",
                        e.message,
                        self.attempts,
                        wait.as_millis()
                    ));
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Keeps the bytes of every stream it wraps below a rate, together.
pub struct Limiter {
    bytes_per_sec: u64,
    state: Mutex<(Instant, u64)>,
}

impl Limiter {
    pub fn new(bytes_per_sec: u64) -> Arc<Limiter> {
        Arc::new(Limiter {
            bytes_per_sec: bytes_per_sec.max(1),
            state: Mutex::new((Instant::now(), 0)),
        })
    }

    /// How long to wait before `n` more bytes may go.
    fn take(&self, n: usize) -> Duration {
        let mut s = self.state.lock().unwrap();
        // Forget idle time, so a pause does not buy a burst.
        let elapsed = s.0.elapsed();
        let due = Duration::from_secs_f64(s.1 as f64 / self.bytes_per_sec as f64);
        if elapsed > due + Duration::from_secs(1) {
            *s = (Instant::now(), 0);
        }
        s.1 += n as u64;
        let due = Duration::from_secs_f64(s.1 as f64 / self.bytes_per_sec as f64);
        due.saturating_sub(s.0.elapsed())
    }

    pub fn wrap(self: &Arc<Self>, stream: ByteStream) -> ByteStream {
        let me = self.clone();
        Box::pin(stream.then(move |chunk| {
            let me = me.clone();
            async move {
                if let Ok(b) = &chunk {
                    let wait = me.take(b.len());
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                chunk
            }
        }))
    }
}

/// A manifest as the remote stored it.
pub struct RemoteManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// Every manifest type berth stores, for `Accept`.
fn accept_all() -> String {
    media_types::SUPPORTED.join(", ")
}

fn body_stream(r: reqwest::Response) -> ByteStream {
    Box::pin(r.bytes_stream().map_err(std::io::Error::other))
}

/// Maps a response that is not what was wanted to an error.
async fn failure(what: &str, r: reqwest::Response) -> TransferError {
    let status = r.status();
    let retry_after = r
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text: String = r.text().await.unwrap_or_default().chars().take(300).collect();
    let transient =
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error();
    TransferError {
        message: format!("{what}: the remote answered {status}{}", detail(&text)),
        transient,
        retry_after,
        not_found: status == StatusCode::NOT_FOUND,
    }
}

fn detail(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

/// An error and the causes it hides ("error sending request": refused? a
/// certificate?), each once.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

fn network(what: &str, e: reqwest::Error) -> TransferError {
    // reqwest's own message hides the cause ("error sending request"): the
    // chain says whether it was a refused connection or a certificate.
    let message = format!("{what}: {}", with_causes(&e));
    let certificate = message.to_lowercase().contains("certificate");
    if certificate {
        // Another attempt meets the same certificate.
        return TransferError::permanent(format!(
            "{message} (trust the registry's CA with ca_certificate, or set insecure)"
        ));
    }
    // Connection refused, reset, timed out: the next attempt may go through.
    TransferError::transient(message)
}

/// One field of a `WWW-Authenticate` challenge.
fn challenge_param(h: &str, key: &str) -> Option<String> {
    let i = h.find(&format!("{key}=\""))? + key.len() + 2;
    let end = h[i..].find('"')?;
    Some(h[i..i + end].to_string())
}

/// A remote registry.
pub struct Remote {
    http: reqwest::Client,
    base: String,
    cfg: RemoteConfig,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
    /// The remote asked for Basic credentials instead of tokens.
    basic: std::sync::atomic::AtomicBool,
}

/// What a request carries: nothing, bytes that can be sent again, or a
/// stream that can be sent once.
pub enum Body {
    Empty,
    Bytes(Bytes),
    Stream(ByteStream),
}

impl Remote {
    pub fn new(cfg: RemoteConfig) -> TResult<Remote> {
        let url = cfg.url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(TransferError::permanent(format!(
                "registry URL {url:?} must start with http:// or https://"
            )));
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .danger_accept_invalid_certs(cfg.insecure)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| TransferError::permanent(format!("the registry's CA certificate: {e}")))?;
            b = b.add_root_certificate(ca);
        }
        let http = b
            .build()
            .map_err(|e| TransferError::permanent(format!("HTTP client: {e}")))?;
        Ok(Remote {
            http,
            base: url,
            cfg,
            tokens: Mutex::default(),
            basic: Default::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        use base64::Engine;
        if self.basic.load(std::sync::atomic::Ordering::Relaxed) {
            let pair = format!("{}:{}", self.cfg.username, self.cfg.password.as_deref().unwrap_or(""));
            return Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ));
        }
        self.tokens.lock().unwrap().get(scope).map(|t| format!("Bearer {t}"))
    }

    /// Answers a 401's challenge: fetches a token for `scope`, or switches
    /// to Basic. False if the challenge cannot be answered.
    async fn authenticate(&self, challenge: &str, scope: &str) -> TResult<bool> {
        let lower = challenge.to_ascii_lowercase();
        if lower.starts_with("basic") {
            if self.cfg.username.is_empty() || self.basic.swap(true, std::sync::atomic::Ordering::Relaxed) {
                return Ok(false);
            }
            return Ok(true);
        }
        if !lower.starts_with("bearer") {
            return Ok(false);
        }
        let Some(realm) = challenge_param(challenge, "realm") else {
            return Ok(false);
        };
        let mut q: Vec<(String, String)> = Vec::new();
        if let Some(s) = challenge_param(challenge, "service") {
            q.push(("service".into(), s));
        }
        if !scope.is_empty() {
            for s in scope.split(' ') {
                q.push(("scope".into(), s.to_string()));
            }
        }
        let mut req = self.http.get(&realm).query(&q);
        if !self.cfg.username.is_empty() {
            req = req.basic_auth(&self.cfg.username, self.cfg.password.as_deref());
        }
        let r = req.send().await.map_err(|e| network("token request", e))?;
        if !r.status().is_success() {
            let e = failure("token request", r).await;
            return Err(TransferError {
                message: format!("{} (check the registry's credentials)", e.message),
                ..e
            });
        }
        let v: serde_json::Value = r
            .json()
            .await
            .map_err(|e| TransferError::permanent(format!("token response: {e}")))?;
        let Some(token) = v["token"].as_str().or(v["access_token"].as_str()) else {
            return Err(TransferError::permanent("the token response holds no token"));
        };
        self.tokens.lock().unwrap().insert(scope.to_string(), token.to_string());
        Ok(true)
    }

    /// Sends one request, answering at most one authentication challenge
    /// (when the body can be sent again).
    async fn send(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: HeaderMap,
        body: Body,
    ) -> TResult<reqwest::Response> {
        let mut body = Some(body);
        for round in 0..2 {
            let mut req = self.http.request(method.clone(), url).headers(headers.clone());
            if let Some(a) = self.auth_header(scope) {
                req = req.header(AUTHORIZATION, a);
            }
            let this = body.take().unwrap_or(Body::Empty);
            let replay = match &this {
                Body::Empty => Some(Body::Empty),
                Body::Bytes(b) => Some(Body::Bytes(b.clone())),
                Body::Stream(_) => None,
            };
            req = match this {
                Body::Empty => req,
                Body::Bytes(b) => req.body(b),
                Body::Stream(s) => req.body(reqwest::Body::wrap_stream(s)),
            };
            let r = req.send().await.map_err(|e| network(&format!("{method} {url}"), e))?;
            if r.status() != StatusCode::UNAUTHORIZED || round == 1 {
                return Ok(r);
            }
            let challenge = r
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let Some(again) = replay else { return Ok(r) };
            if !self.authenticate(&challenge, scope).await? {
                return Ok(r);
            }
            body = Some(again);
        }
        unreachable!("the loop returns in its second round")
    }

    async fn get(&self, path: &str, scope: &str, headers: HeaderMap) -> TResult<reqwest::Response> {
        self.send(
            Method::GET,
            &format!("{}{path}", self.base),
            scope,
            headers,
            Body::Empty,
        )
        .await
    }

    /// Whether the remote answers its API root with these credentials.
    pub async fn ping(&self) -> TResult<()> {
        let r = self.get("/v2/", "", HeaderMap::new()).await?;
        match r.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => Err(TransferError::permanent("the registry refused the credentials (401)")),
            _ => Err(failure("GET /v2/", r).await),
        }
    }

    /// Follows `Link: <...>; rel="next"` through a paged list of `field`.
    async fn paged(&self, first: String, scope: &str, field: &str) -> TResult<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next.take() {
            let r = self.get(&path, scope, HeaderMap::new()).await?;
            if r.status() == StatusCode::NOT_FOUND {
                return Ok(out);
            }
            if !r.status().is_success() {
                return Err(failure(&format!("GET {path}"), r).await);
            }
            next = r
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .filter(|l| l.contains("rel=\"next\""))
                .and_then(|l| Some(l[l.find('<')? + 1..l.find('>')?].to_string()))
                .map(|l| {
                    // A full URL or a path: keep the path.
                    l.strip_prefix(&self.base).map(str::to_string).unwrap_or(l)
                });
            let v: serde_json::Value = r
                .json()
                .await
                .map_err(|e| TransferError::permanent(format!("GET {path}: {e}")))?;
            let before = out.len();
            out.extend(
                v[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string)),
            );
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    pub async fn repositories(&self) -> TResult<Vec<String>> {
        self.paged("/v2/_catalog?n=1000".into(), "registry:catalog:*", "repositories")
            .await
    }

    pub async fn tags(&self, repo: &str) -> TResult<Vec<String>> {
        self.paged(format!("/v2/{repo}/tags/list?n=1000"), &pull(repo), "tags")
            .await
    }

    /// A manifest by tag or digest, its bytes checked against its digest.
    pub async fn manifest(&self, repo: &str, reference: &str) -> TResult<Option<RemoteManifest>> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, accept_all().parse().expect("header"));
        let r = self
            .get(&format!("/v2/{repo}/manifests/{reference}"), &pull(repo), h)
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(failure(&format!("GET manifest {repo}:{reference}"), r).await);
        }
        let media_type = r
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let stated = r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let bytes = r
            .bytes()
            .await
            .map_err(|e| network(&format!("reading manifest {repo}:{reference}"), e))?;
        let wanted = reference
            .parse::<Digest>()
            .ok()
            .or(stated)
            .unwrap_or_else(|| Digest::of(Algorithm::Sha256, &bytes));
        let actual = Digest::of(wanted.algorithm(), &bytes);
        if actual != wanted {
            return Err(TransferError::permanent(format!(
                "manifest {repo}:{reference}: the remote sent bytes that hash to {actual}, not {wanted}"
            )));
        }
        Ok(Some(RemoteManifest {
            bytes,
            media_type,
            digest: actual,
        }))
    }

    /// The digest a tag or digest resolves to, if it exists.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> TResult<Option<Digest>> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, accept_all().parse().expect("header"));
        let r = self
            .send(
                Method::HEAD,
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
                &pull(repo),
                h,
                Body::Empty,
            )
            .await?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => match r.headers().get("docker-content-digest") {
                Some(d) => Ok(d.to_str().ok().and_then(|d| d.parse().ok())),
                // No digest header: ask for the bytes.
                None => Ok(self.manifest(repo, reference).await?.map(|m| m.digest)),
            },
            _ => Err(failure(&format!("HEAD manifest {repo}:{reference}"), r).await),
        }
    }

    pub async fn has_blob(&self, repo: &str, digest: &Digest) -> TResult<bool> {
        Ok(self.blob_size(repo, digest).await?.is_some())
    }

    /// A blob's size, if the remote has it.
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> TResult<Option<u64>> {
        let r = self
            .send(
                Method::HEAD,
                &format!("{}/v2/{repo}/blobs/{digest}", self.base),
                &pull_push(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(None),
            // From the header: a HEAD's body is empty, whatever it says.
            s if s.is_success() => Ok(Some(
                r.headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            _ => Err(failure(&format!("HEAD blob {digest}"), r).await),
        }
    }

    /// A blob's size and bytes (redirects, to a bucket say, are followed).
    pub async fn blob(&self, repo: &str, digest: &Digest) -> TResult<(u64, ByteStream)> {
        let r = self
            .get(&format!("/v2/{repo}/blobs/{digest}"), &pull(repo), HeaderMap::new())
            .await?;
        if !r.status().is_success() {
            return Err(failure(&format!("GET blob {digest} of {repo}"), r).await);
        }
        let size = r.content_length().unwrap_or(0);
        Ok((size, body_stream(r)))
    }

    /// Mounts a blob from another repository of the remote; true if it did.
    pub async fn mount(&self, repo: &str, from: &str, digest: &Digest) -> TResult<bool> {
        let url = format!("{}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}", self.base);
        let scope = format!("{} {}", pull_push(repo), pull(from));
        let r = self
            .send(Method::POST, &url, &scope, HeaderMap::new(), Body::Empty)
            .await?;
        match r.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // The remote opened an upload instead: close it.
                if let Some(loc) = r.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                    let loc = self.absolute(loc);
                    let _ = self
                        .send(Method::DELETE, &loc, &scope, HeaderMap::new(), Body::Empty)
                        .await;
                }
                Ok(false)
            }
            s if s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS => Ok(false),
            _ => Err(failure(&format!("mount {digest}"), r).await),
        }
    }

    /// Uploads a blob in one streamed PUT.
    pub async fn put_blob(&self, repo: &str, digest: &Digest, size: u64, body: ByteStream) -> TResult<()> {
        let scope = pull_push(repo);
        let r = self
            .send(
                Method::POST,
                &format!("{}/v2/{repo}/blobs/uploads/", self.base),
                &scope,
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(failure(&format!("starting the upload of {digest}"), r).await);
        }
        let Some(loc) = r.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
            return Err(TransferError::permanent(
                "the remote opened an upload without a Location",
            ));
        };
        let loc = self.absolute(loc);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, "application/octet-stream".parse().expect("header"));
        h.insert(CONTENT_LENGTH, size.into());
        let r = self
            .send(
                Method::PUT,
                &format!("{loc}{sep}digest={digest}"),
                &scope,
                h,
                Body::Stream(body),
            )
            .await?;
        if r.status() != StatusCode::CREATED {
            return Err(failure(&format!("uploading {digest}"), r).await);
        }
        Ok(())
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: Bytes) -> TResult<()> {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            media_type
                .parse()
                .map_err(|_| TransferError::permanent(format!("media type {media_type:?}")))?,
        );
        let r = self
            .send(
                Method::PUT,
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
                &pull_push(repo),
                h,
                Body::Bytes(bytes),
            )
            .await?;
        if r.status() != StatusCode::CREATED {
            return Err(failure(&format!("PUT manifest {repo}:{reference}"), r).await);
        }
        Ok(())
    }

    /// Deletes a manifest by digest (or a tag, where the remote allows it).
    /// False if it was not there.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> TResult<bool> {
        let r = self
            .send(
                Method::DELETE,
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
                &format!("repository:{repo}:pull,push,delete"),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => Err(failure(&format!("DELETE manifest {repo}:{reference}"), r).await),
        }
    }

    /// The referrers of a manifest, from the referrers API, or from the
    /// tag schema (`sha256-<hex>`) where the remote has no such API.
    pub async fn referrers(&self, repo: &str, digest: &Digest) -> TResult<Vec<Descriptor>> {
        let r = self
            .get(&format!("/v2/{repo}/referrers/{digest}"), &pull(repo), HeaderMap::new())
            .await?;
        let index: serde_json::Value = if r.status().is_success() {
            r.json()
                .await
                .map_err(|e| TransferError::permanent(format!("referrers of {digest}: {e}")))?
        } else if r.status() == StatusCode::NOT_FOUND || r.status() == StatusCode::BAD_REQUEST {
            let tag = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
            match self.manifest(repo, &tag).await? {
                Some(m) => serde_json::from_slice(&m.bytes).unwrap_or_default(),
                None => return Ok(vec![]),
            }
        } else {
            return Err(failure(&format!("referrers of {digest}"), r).await);
        };
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| serde_json::from_value(d.clone()).ok())
            .collect())
    }

    /// For a Harbor (or berth) remote: creates the project if it is missing.
    pub async fn ensure_project(&self, project: &str) -> TResult<()> {
        let url = format!("{}/api/v2.0/projects", self.base);
        let mut req = self.http.post(&url).json(&serde_json::json!({
            "project_name": project,
            "metadata": {"public": "false"},
        }));
        if !self.cfg.username.is_empty() {
            req = req.basic_auth(&self.cfg.username, self.cfg.password.as_deref());
        }
        let r = req.send().await.map_err(|e| network("creating the project", e))?;
        match r.status() {
            StatusCode::CREATED | StatusCode::CONFLICT => Ok(()),
            _ => Err(failure(&format!("creating project {project} on the remote"), r).await),
        }
    }
}

fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn pull_push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Bytes read so far from a stream, for reports.
pub fn counted(stream: ByteStream, counter: Arc<std::sync::atomic::AtomicU64>) -> ByteStream {
    Box::pin(stream.inspect(move |c| {
        if let Ok(b) = c {
            counter.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_honours_retry_after_within_max() {
        let r = Retry {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(r.delay(1, None), Duration::from_millis(100));
        assert_eq!(r.delay(3, None), Duration::from_millis(400));
        assert_eq!(r.delay(10, None), Duration::from_secs(2));
        assert_eq!(r.delay(1, Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(r.delay(1, Some(Duration::from_secs(100))), Duration::from_secs(2));
        assert_eq!(r.delay(3, Some(Duration::ZERO)), Duration::from_millis(400));
    }

    #[tokio::test]
    async fn retries_transient_failures_only() {
        let r = Retry {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        };
        let notes = Mutex::new(Vec::new());
        let note = |s: String| notes.lock().unwrap().push(s);
        let mut calls = 0;
        let out = r
            .run("x", &note, || {
                calls += 1;
                let c = calls;
                async move {
                    if c < 3 {
                        Err(TransferError::transient("busy"))
                    } else {
                        Ok(c)
                    }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 3);
        assert_eq!(notes.lock().unwrap().len(), 2);
        let mut calls = 0;
        let out: TResult<()> = r
            .run("y", &note, || {
                calls += 1;
                async { Err(TransferError::permanent("no")) }
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls, 1, "a permanent failure is not retried");
        let out: TResult<()> = r
            .run("z", &note, || async { Err(TransferError::transient("busy")) })
            .await;
        assert!(out.unwrap_err().transient, "attempts ran out");
    }

    #[test]
    fn challenge_fields() {
        let h = r#"Bearer realm="https://r.example/token",service="reg",scope="repository:a/b:pull""#;
        assert_eq!(challenge_param(h, "realm").unwrap(), "https://r.example/token");
        assert_eq!(challenge_param(h, "service").unwrap(), "reg");
        assert_eq!(challenge_param(h, "scope").unwrap(), "repository:a/b:pull");
        assert!(challenge_param(h, "error").is_none());
    }

    #[tokio::test]
    async fn the_limiter_holds_a_rate() {
        let l = Limiter::new(1_000_000);
        let chunks: Vec<std::io::Result<Bytes>> = (0..10).map(|_| Ok(Bytes::from(vec![0u8; 50_000]))).collect();
        let start = Instant::now();
        let mut s = l.wrap(Box::pin(futures_util::stream::iter(chunks)));
        let mut n = 0;
        while let Some(c) = s.next().await {
            n += c.unwrap().len();
        }
        assert_eq!(n, 500_000);
        // 500 kB at 1 MB/s: about half a second (the first chunk goes at once).
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    }
}
