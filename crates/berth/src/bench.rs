//! `berth bench`: load for any OCI registry, over the distribution API only,
//! with the machine's own limits measured in the same run so that results
//! are ratios that hold on a noisy machine.
//!
//! Scenarios: blob push (monolithic and chunked) and pull at given sizes;
//! manifest GET and HEAD by tag at a given concurrency; several clients
//! pushing and pulling a many-layer image at once; paging through 10,000
//! tags and a catalog of 10,000 repositories. Limits: single-core SHA-256
//! throughput, and with `--nginx`, nginx serving the same bytes and a file of
//! a manifest's size from the page cache.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// What to run, from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub repo: String,
    pub scenarios: Vec<String>,
    pub sizes: Vec<u64>,
    pub concurrency: Vec<usize>,
    pub duration: Duration,
    pub clients: usize,
    pub layers: usize,
    pub count: usize,
    pub pid: Option<u32>,
    pub nginx: bool,
    pub json: bool,
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub scenario: String,
    pub detail: String,
    /// MB/s (10^6 bytes) for transfers, requests/s for request scenarios.
    pub rate: f64,
    pub unit: &'static str,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: u64,
    /// The machine's limit for the same work, when measured.
    pub limit: Option<f64>,
    pub limit_what: Option<String>,
    /// Peak RSS of the watched process while this figure was measured (and
    /// whatever set it up since the figure before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

impl Figure {
    fn ratio(&self) -> Option<f64> {
        self.limit.filter(|l| *l > 0.0).map(|l| self.rate / l)
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub figures: Vec<Figure>,
    pub peak_rss_mib: Option<f64>,
    pub sha256_mb_s: Option<f64>,
}

/// Parses `1M`, `64MiB`, `1G`, `512k` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("{s:?} is not a size like 1M, 64M or 1G"))
}

fn human(n: u64) -> String {
    berth_http::portal::human_size(n as i64)
}

/// Deterministic pseudo-random bytes: blob `seed` of `size` bytes, produced in
/// 1 MiB pieces so that memory stays flat at any size. One random block is
/// made per blob and each piece is that block with its index mixed into the
/// first bytes, so a piece costs one copy: the client must not compete with
/// the registry for the CPU it is measuring.
fn pieces(seed: u64, size: u64) -> impl Iterator<Item = Bytes> {
    const PIECE: usize = 1 << 20;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut block = Vec::with_capacity(PIECE.min(size as usize));
    while block.len() < PIECE.min(size as usize) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        block.extend_from_slice(&state.to_le_bytes());
    }
    block.truncate(PIECE.min(size as usize));
    let mut left = size;
    let mut index = 0u64;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(PIECE as u64) as usize;
        let mut v = block[..n].to_vec();
        let mix = (index ^ seed).to_le_bytes();
        for (b, m) in v.iter_mut().zip(mix) {
            *b ^= m;
        }
        index += 1;
        left -= n as u64;
        Some(Bytes::from(v))
    })
}

fn digest_of(seed: u64, size: u64) -> String {
    let mut h = Sha256::new();
    for p in pieces(seed, size) {
        h.update(&p);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn body_of(seed: u64, size: u64, progress: Option<Arc<AtomicU64>>) -> reqwest::Body {
    let s = futures_util::stream::iter(pieces(seed, size)).map(move |p| {
        if let Some(c) = &progress {
            c.fetch_add(p.len() as u64, Ordering::Relaxed);
        }
        Ok::<_, std::io::Error>(p)
    });
    reqwest::Body::wrap_stream(s)
}

/// Single-core SHA-256 throughput in MB/s, over `bytes` of data in memory.
pub fn sha256_rate(bytes: u64) -> f64 {
    let buf: Vec<u8> = pieces(7, 1 << 20).next().unwrap().to_vec();
    let rounds = (bytes >> 20).max(1);
    let started = Instant::now();
    let mut h = Sha256::new();
    for _ in 0..rounds {
        h.update(&buf);
    }
    std::hint::black_box(h.finalize());
    (rounds << 20) as f64 / started.elapsed().as_secs_f64() / 1e6
}

fn percentile(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    Some(sorted_us[i] as f64 / 1000.0)
}

/// A client of one registry, with a bearer token when the registry wants one.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    user: Option<(String, String)>,
    /// The Authorization header's value: a bearer token or Basic credentials.
    token: Arc<std::sync::Mutex<Option<String>>>,
}

impl Client {
    fn new(base: &str, user: Option<(String, String)>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            user,
            token: Arc::default(),
        })
    }

    /// The same connections and credentials, with a token of its own.
    fn fork(&self) -> Client {
        Client {
            token: Arc::default(),
            ..self.clone()
        }
    }

    /// Gets a token for `scopes` through the registry's challenge, if it has one.
    async fn login(&self, scopes: &[String]) -> anyhow::Result<()> {
        let r = self.http.get(format!("{}/v2/", self.base)).send().await?;
        if r.status() != StatusCode::UNAUTHORIZED {
            return Ok(());
        }
        let challenge = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if challenge.starts_with("Basic ") {
            // distribution with htpasswd, and other registries without a
            // token service: the password goes with every request.
            let Some((u, p)) = &self.user else {
                bail!("the registry asks for a user and password (Basic); pass -u and -p");
            };
            use base64::Engine as _;
            let pair = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            *self.token.lock().unwrap() = Some(format!("Basic {pair}"));
            return Ok(());
        }
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            bail!("the registry asks for {challenge:?}, which berth bench does not speak");
        };
        let field = |k: &str| {
            params
                .split(',')
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.trim_matches('"').to_string())
        };
        let realm = field("realm").ok_or_else(|| anyhow!("no realm in {challenge:?}"))?;
        let mut req = self
            .http
            .get(&realm)
            .query(&[("service", field("service").unwrap_or_default())]);
        for s in scopes {
            req = req.query(&[("scope", s)]);
        }
        if let Some((u, p)) = &self.user {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().await?;
        if !r.status().is_success() {
            bail!("token request failed: {}", r.status());
        }
        let v: serde_json::Value = r.json().await?;
        let t = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| anyhow!("no token in the answer"))?;
        *self.token.lock().unwrap() = Some(format!("Bearer {t}"));
        Ok(())
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let r = self.http.request(method, url);
        match self.token.lock().unwrap().clone() {
            Some(auth) => r.header(reqwest::header::AUTHORIZATION, auth),
            None => r,
        }
    }

    fn location(&self, r: &reqwest::Response) -> anyhow::Result<String> {
        let l = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("no Location in the answer"))?;
        Ok(if l.starts_with("http") {
            l.to_string()
        } else {
            format!("{}{l}", self.base)
        })
    }

    fn with_digest(url: &str, digest: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}digest={digest}")
    }

    /// Monolithic push: POST then one PUT with the whole body.
    async fn push_monolithic(&self, repo: &str, seed: u64, size: u64, digest: &str) -> anyhow::Result<()> {
        self.push_monolithic_counted(repo, seed, size, digest, None).await
    }

    /// Monolithic push (POST, then PUT of the whole body); `sent` counts bytes as they go.
    async fn push_monolithic_counted(
        &self,
        repo: &str,
        seed: u64,
        size: u64,
        digest: &str,
        sent: Option<Arc<AtomicU64>>,
    ) -> anyhow::Result<()> {
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await?;
        if r.status() != StatusCode::ACCEPTED {
            bail!("starting an upload: {}", r.status());
        }
        let loc = self.location(&r)?;
        let r = self
            .req(Method::PUT, &Self::with_digest(&loc, digest))
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .body(body_of(seed, size, sent))
            .send()
            .await?;
        if r.status() != StatusCode::CREATED {
            bail!(
                "finishing an upload: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Chunked push: PATCH in `chunk`-byte pieces with Content-Range, then PUT.
    async fn push_chunked(
        &self,
        repo: &str,
        seed: u64,
        size: u64,
        digest: &str,
        chunk: u64,
        progress: Arc<AtomicU64>,
    ) -> anyhow::Result<()> {
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await?;
        if r.status() != StatusCode::ACCEPTED {
            bail!("starting an upload: {}", r.status());
        }
        let mut loc = self.location(&r)?;
        let mut sent = 0u64;
        let mut iter = pieces(seed, size).peekable();
        while sent < size {
            let mut part: Vec<Bytes> = Vec::new();
            let mut n = 0u64;
            while n < chunk {
                match iter.next() {
                    Some(p) => {
                        n += p.len() as u64;
                        part.push(p);
                    }
                    None => break,
                }
            }
            let stream = futures_util::stream::iter(part.into_iter().map(Ok::<_, std::io::Error>));
            let r = self
                .req(Method::PATCH, &loc)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{sent}-{}", sent + n - 1))
                .header("content-length", n)
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await?;
            if r.status() != StatusCode::ACCEPTED {
                bail!("chunk at {sent}: {}", r.status());
            }
            loc = self.location(&r)?;
            sent += n;
            progress.fetch_add(n, Ordering::Relaxed);
        }
        let r = self.req(Method::PUT, &Self::with_digest(&loc, digest)).send().await?;
        if r.status() != StatusCode::CREATED {
            bail!("finishing an upload: {}", r.status());
        }
        Ok(())
    }

    /// Pulls a blob; returns its length. `verify` hashes it on the way.
    async fn pull(&self, repo: &str, digest: &str, verify: bool) -> anyhow::Result<u64> {
        let r = self
            .req(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await?;
        if r.status() != StatusCode::OK {
            bail!("pulling {digest}: {}", r.status());
        }
        let mut n = 0u64;
        let mut h = verify.then(Sha256::new);
        let mut s = r.bytes_stream();
        while let Some(c) = s.next().await {
            let c = c?;
            n += c.len() as u64;
            if let Some(h) = &mut h {
                h.update(&c);
            }
        }
        if let Some(h) = h {
            let got = format!("sha256:{}", hex::encode(h.finalize()));
            if got != digest {
                bail!("pulled bytes hash to {got}, not {digest}");
            }
        }
        Ok(n)
    }

    async fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> anyhow::Result<()> {
        let r = self
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body.to_vec())
            .send()
            .await?;
        if r.status() != StatusCode::CREATED {
            bail!("putting manifest {repo}:{reference}: {}", r.status());
        }
        Ok(())
    }

    /// A small image: config, `layers` layers of `layer_size` bytes, manifest.
    async fn push_image(&self, repo: &str, tag: &str, seed: u64, layer_sizes: &[u64]) -> anyhow::Result<Vec<u8>> {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
        let cd = format!("sha256:{}", hex::encode(Sha256::digest(config.as_bytes())));
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={cd}"))
            .header("content-type", "application/octet-stream")
            .body(config.clone())
            .send()
            .await?;
        match r.status() {
            StatusCode::CREATED => {}
            // A registry without single-request pushes opened a session instead.
            StatusCode::ACCEPTED => {
                let loc = self.location(&r)?;
                let r = self
                    .req(Method::PUT, &Self::with_digest(&loc, &cd))
                    .header("content-type", "application/octet-stream")
                    .body(config.clone())
                    .send()
                    .await?;
                if r.status() != StatusCode::CREATED {
                    bail!("pushing a config: {}", r.status());
                }
            }
            other => bail!("pushing a config: {other}"),
        }
        let mut layers = Vec::new();
        for (i, size) in layer_sizes.iter().enumerate() {
            let s = seed * 1000 + i as u64;
            let d = digest_of(s, *size);
            self.push_monolithic(repo, s, *size, &d).await?;
            layers.push(
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size}),
            );
        }
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": layers,
        })
        .to_string()
        .into_bytes();
        self.put_manifest(repo, tag, &m).await?;
        Ok(m)
    }
}

/// Progress on stderr for long runs: a line rewritten in place.
struct Progress {
    done: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn bytes(label: String, counter: Arc<AtomicU64>, total: u64, quiet: bool) -> Progress {
        let done = Arc::new(AtomicBool::new(false));
        let task = (!quiet && total >= 64 << 20).then(|| {
            let done = done.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let n = counter.load(Ordering::Relaxed).min(total);
                    let width = 30;
                    let filled = (n as f64 / total as f64 * width as f64) as usize;
                    eprint!(
                        "\r  {label} [{}{}] {} / {}  {:.0} MB/s   ",
                        "#".repeat(filled),
                        " ".repeat(width - filled),
                        human(n),
                        human(total),
                        n as f64 / started.elapsed().as_secs_f64() / 1e6
                    );
                }
                eprint!("\r{}\r", " ".repeat(100));
            })
        });
        Progress { done, task }
    }

    async fn finish(self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}

/// Peak RSS of the registry's process, figure by figure. Linux keeps one
/// high-water mark per process; writing 5 to `clear_refs` resets it, so each
/// figure gets its own peak and the run's peak is the largest of them.
struct RssWatch {
    pid: Option<u32>,
    max: Option<f64>,
}

impl RssWatch {
    fn new(pid: Option<u32>) -> RssWatch {
        let w = RssWatch { pid, max: None };
        w.reset();
        w
    }

    fn reset(&self) {
        if let Some(pid) = self.pid {
            // Not permitted on another user's process: then peaks accumulate.
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    fn mark(&mut self, mut f: Figure) -> Figure {
        f.peak_rss_mib = self.pid.and_then(peak_rss_mib);
        if let Some(p) = f.peak_rss_mib {
            self.max = Some(self.max.map_or(p, |m: f64| m.max(p)));
        }
        self.reset();
        f
    }

    fn overall(&self) -> Option<f64> {
        let now = self.pid.and_then(peak_rss_mib);
        match (self.max, now) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Pulls measured per size, after one that warms caches; the best counts,
/// for the registry and for nginx alike, since a loaded two-core machine
/// makes any single transfer noisy.
const PULL_ROUNDS: usize = 3;

/// Runs `f` on `concurrency` tasks for `duration`; request rate and latencies.
async fn load<F, Fut>(concurrency: usize, duration: Duration, f: F) -> (f64, Vec<u64>, u64)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (f, stop) = (f.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if f().await {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap_or_default();
        all.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len() as f64 / secs, all, errors)
}

/// nginx serving a directory on loopback, for the reference figures.
struct Nginx {
    child: std::process::Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().display();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = format!(
            "user root;\nworker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;\n\
             client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
             server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n"
        );
        std::fs::create_dir_all(dir.path().join("www"))?;
        std::fs::write(dir.path().join("nginx.conf"), conf)?;
        let child = std::process::Command::new("nginx")
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting nginx (is it installed?)")?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx {
            child,
            base: format!("http://{addr}"),
            dir,
        })
    }

    fn write(&self, name: &str, seed: u64, size: u64) -> anyhow::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.path().join("www").join(name))?;
        for p in pieces(seed, size) {
            f.write_all(&p)?;
        }
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn timed_get(http: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let r = http.get(url).send().await?;
    let mut n = 0u64;
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        n += c?.len() as u64;
    }
    Ok(n)
}

pub async fn run(o: Options) -> anyhow::Result<Report> {
    let user = match (&o.user, &o.password) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        _ => None,
    };
    let c = Client::new(&o.url, user)?;
    let repo = o.repo.clone();
    let all = o.scenarios.iter().any(|s| s == "all");
    let wants = |s: &str| all || o.scenarios.iter().any(|x| x == s);
    let mut figures = Vec::new();
    let mut rss = RssWatch::new(o.pid);
    let say = |f: &Figure| {
        if !o.json {
            eprintln!("{}", line(f));
        }
    };
    let nginx = if o.nginx { Some(Nginx::start()?) } else { None };
    let sha = sha256_rate(512 << 20);
    if !o.json {
        eprintln!("single-core SHA-256: {sha:.0} MB/s");
    }
    c.login(&[format!("repository:{repo}:pull,push")]).await?;

    if wants("push") || wants("pull") {
        for &size in &o.sizes {
            let seed = size ^ 0x5eed ^ (std::process::id() as u64) << 20;
            let digest = digest_of(seed, size);
            if wants("push") {
                for chunked in [false, true] {
                    let counter = Arc::new(AtomicU64::new(0));
                    let label = format!(
                        "push {} {}",
                        human(size),
                        if chunked { "chunked" } else { "monolithic" }
                    );
                    let p = Progress::bytes(label.clone(), counter.clone(), size, o.json);
                    // Distinct content per run, so no registry can skip the bytes.
                    let seed = seed + u64::from(chunked);
                    let digest = if chunked { digest_of(seed, size) } else { digest.clone() };
                    let started = Instant::now();
                    let r = if chunked {
                        c.push_chunked(&repo, seed, size, &digest, 16 << 20, counter.clone())
                            .await
                    } else {
                        c.push_monolithic_counted(&repo, seed, size, &digest, Some(counter.clone()))
                            .await
                    };
                    let secs = started.elapsed().as_secs_f64();
                    p.finish().await;
                    let f = Figure {
                        scenario: "push".into(),
                        detail: label,
                        rate: size as f64 / secs / 1e6,
                        unit: "MB/s",
                        p50_ms: None,
                        p99_ms: None,
                        errors: u64::from(r.is_err()),
                        limit: Some(sha),
                        limit_what: Some("single-core SHA-256".into()),
                        peak_rss_mib: None,
                    };
                    if let Err(e) = r {
                        eprintln!("  error: {e:#}");
                    }
                    let f = rss.mark(f);
                    say(&f);
                    figures.push(f);
                }
            }
            if wants("pull") {
                if !wants("push") {
                    c.push_monolithic(&repo, seed, size, &digest).await?;
                }
                let nginx_rate = match &nginx {
                    Some(n) => {
                        n.write("blob", seed, size)?;
                        // Once to warm the page cache, then the best of three.
                        timed_get(&c.http, &format!("{}/blob", n.base)).await?;
                        let mut best: f64 = 0.0;
                        for _ in 0..PULL_ROUNDS {
                            let started = Instant::now();
                            let got = timed_get(&c.http, &format!("{}/blob", n.base)).await?;
                            best = best.max(got as f64 / started.elapsed().as_secs_f64() / 1e6);
                        }
                        Some(best)
                    }
                    None => None,
                };
                // The same for the registry: the first pull may read from disk.
                c.pull(&repo, &digest, false).await?;
                let mut best: f64 = 0.0;
                let mut r = Ok(0);
                for _ in 0..PULL_ROUNDS {
                    let started = Instant::now();
                    r = c.pull(&repo, &digest, false).await;
                    if r.is_err() {
                        break;
                    }
                    best = best.max(size as f64 / started.elapsed().as_secs_f64() / 1e6);
                }
                let f = Figure {
                    scenario: "pull".into(),
                    detail: format!("pull {}", human(size)),
                    rate: best,
                    unit: "MB/s",
                    p50_ms: None,
                    p99_ms: None,
                    errors: u64::from(r.is_err()),
                    limit: nginx_rate,
                    limit_what: nginx_rate.map(|_| "nginx, same bytes, page cache".into()),
                    peak_rss_mib: None,
                };
                let f = rss.mark(f);
                say(&f);
                figures.push(f);
            }
        }
    }

    if wants("manifest") {
        c.push_image(&repo, "bench", 1, &[1024]).await?;
        let manifest_size = c
            .req(Method::GET, &format!("/v2/{repo}/manifests/bench"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await?
            .bytes()
            .await?
            .len() as u64;
        if let Some(n) = &nginx {
            n.write("manifest", 3, manifest_size)?;
        }
        for &conc in &o.concurrency {
            for method in [Method::GET, Method::HEAD] {
                let nginx_rate = match &nginx {
                    Some(n) => {
                        let http = c.http.clone();
                        let url = format!("{}/manifest", n.base);
                        let m = method.clone();
                        let (rate, _, _) = load(conc, o.duration, move || {
                            let (http, url, m) = (http.clone(), url.clone(), m.clone());
                            async move {
                                match http.request(m, &url).send().await {
                                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                                    Err(_) => false,
                                }
                            }
                        })
                        .await;
                        Some(rate)
                    }
                    None => None,
                };
                let cc = c.clone();
                let path = format!("/v2/{repo}/manifests/bench");
                let m = method.clone();
                let (rate, lat, errors) = load(conc, o.duration, move || {
                    let (cc, path, m) = (cc.clone(), path.clone(), m.clone());
                    async move {
                        match cc
                            .req(m, &path)
                            .header("accept", "application/vnd.oci.image.manifest.v1+json")
                            .send()
                            .await
                        {
                            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                            Err(_) => false,
                        }
                    }
                })
                .await;
                let f = Figure {
                    scenario: "manifest".into(),
                    detail: format!("{method} by tag, {conc} connections"),
                    rate,
                    unit: "req/s",
                    p50_ms: percentile(&lat, 0.5),
                    p99_ms: percentile(&lat, 0.99),
                    errors,
                    limit: nginx_rate,
                    limit_what: nginx_rate.map(|_| format!("nginx, {manifest_size}-byte file")),
                    peak_rss_mib: None,
                };
                let f = rss.mark(f);
                say(&f);
                figures.push(f);
            }
        }
    }

    if wants("image") {
        // Mixed layer sizes, 5 to 20 layers: a few large, most small.
        let sizes: Vec<u64> = (0..o.layers)
            .map(|i| match i % 5 {
                0 => 8 << 20,
                1 => 2 << 20,
                _ => 256 << 10,
            })
            .collect();
        let total: u64 = sizes.iter().sum();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..o.clients {
            let (c, repo, sizes) = (c.fork(), format!("{repo}-image-{k}"), sizes.clone());
            tasks.push(tokio::spawn(async move {
                c.login(&[format!("repository:{repo}:pull,push")]).await?;
                let m = c.push_image(&repo, "v1", 100 + k as u64, &sizes).await?;
                let v: serde_json::Value = serde_json::from_slice(&m)?;
                for l in v["layers"].as_array().into_iter().flatten() {
                    c.pull(&repo, l["digest"].as_str().unwrap_or_default(), true).await?;
                }
                anyhow::Ok(())
            }));
        }
        let mut errors = 0;
        for t in tasks {
            match t.await? {
                Ok(()) => {}
                Err(e) => {
                    errors += 1;
                    eprintln!("  image client error: {e:#}");
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let f = Figure {
            scenario: "image".into(),
            detail: format!(
                "{} clients, each pushes then pulls {} layers ({})",
                o.clients,
                o.layers,
                human(total)
            ),
            rate: (2 * total * o.clients as u64) as f64 / secs / 1e6,
            unit: "MB/s",
            p50_ms: None,
            p99_ms: None,
            errors,
            limit: None,
            limit_what: None,
            peak_rss_mib: None,
        };
        let f = rss.mark(f);
        say(&f);
        figures.push(f);
    }

    if wants("tags") || wants("catalog") {
        let m = c.push_image(&repo, "base", 2, &[1024]).await?;
        if wants("tags") {
            let made = fill(o.count, 32, {
                let (c, repo, m) = (c.clone(), repo.clone(), m.clone());
                move |i| {
                    let (c, repo, m) = (c.clone(), repo.clone(), m.clone());
                    async move { c.put_manifest(&repo, &format!("t{i:05}"), &m).await }
                }
            })
            .await;
            let lat = page_through(&c, &format!("/v2/{repo}/tags/list?n=100")).await?;
            let f = paging_figure("tags", format!("{made} tags, pages of 100"), &lat);
            let f = rss.mark(f);
            say(&f);
            figures.push(f);
        }
        if wants("catalog") {
            let v: serde_json::Value = serde_json::from_slice(&m)?;
            let blobs: Vec<String> = std::iter::once(v["config"]["digest"].as_str().unwrap_or_default().to_string())
                .chain(
                    v["layers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|l| l["digest"].as_str().unwrap_or_default().to_string()),
                )
                .collect();
            let project = repo.split('/').next().unwrap_or("library").to_string();
            let made = fill(o.count, 32, {
                let (c, repo, m, blobs, project) = (c.clone(), repo.clone(), m.clone(), blobs.clone(), project.clone());
                move |i| {
                    let (c, repo, m, blobs) = (c.fork(), repo.clone(), m.clone(), blobs.clone());
                    let target = format!("{project}/cat-{i:05}");
                    async move {
                        c.login(&[
                            format!("repository:{target}:pull,push"),
                            format!("repository:{repo}:pull"),
                        ])
                        .await?;
                        for b in &blobs {
                            let r = c
                                .req(
                                    Method::POST,
                                    &format!("/v2/{target}/blobs/uploads/?mount={b}&from={repo}"),
                                )
                                .send()
                                .await?;
                            if r.status() != StatusCode::CREATED {
                                bail!("mount into {target}: {}", r.status());
                            }
                        }
                        c.put_manifest(&target, "v1", &m).await
                    }
                }
            })
            .await;
            let lister = c.fork();
            lister.login(&["registry:catalog:*".to_string()]).await?;
            let lat = page_through(&lister, "/v2/_catalog?n=100").await?;
            let f = paging_figure("catalog", format!("{made} repositories made, pages of 100"), &lat);
            let f = rss.mark(f);
            say(&f);
            figures.push(f);
        }
    }

    let peak_rss_mib = rss.overall();
    Ok(Report {
        url: o.url.clone(),
        figures,
        peak_rss_mib,
        sha256_mb_s: Some(sha),
    })
}

/// Runs `f(0..n)` with `width` at a time; how many succeeded.
async fn fill<F, Fut>(n: usize, width: usize, f: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let results: Vec<bool> = futures_util::stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move { fut.await.is_ok() }
        })
        .buffer_unordered(width)
        .collect()
        .await;
    results.into_iter().filter(|ok| *ok).count()
}

/// Follows Link headers from `first`; each page's latency in microseconds.
async fn page_through(c: &Client, first: &str) -> anyhow::Result<Vec<u64>> {
    let mut lat = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let t = Instant::now();
        let r = c.req(Method::GET, &path).send().await?;
        if !r.status().is_success() {
            bail!("{path}: {}", r.status());
        }
        let link = r
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.split(';').next())
            .map(|l| l.trim().trim_start_matches('<').trim_end_matches('>').to_string());
        r.bytes().await?;
        lat.push(t.elapsed().as_micros() as u64);
        next = link;
    }
    lat.sort_unstable();
    Ok(lat)
}

fn paging_figure(scenario: &str, detail: String, lat: &[u64]) -> Figure {
    Figure {
        scenario: scenario.into(),
        detail: format!("{detail}, {} pages", lat.len()),
        rate: lat.len() as f64 / (lat.iter().sum::<u64>() as f64 / 1e6),
        unit: "pages/s",
        p50_ms: percentile(lat, 0.5),
        p99_ms: percentile(lat, 0.99),
        errors: 0,
        limit: None,
        limit_what: None,
        peak_rss_mib: None,
    }
}

pub fn line(f: &Figure) -> String {
    let mut s = format!("{:<9} {:<46} {:>10.1} {:<7}", f.scenario, f.detail, f.rate, f.unit);
    if let (Some(a), Some(b)) = (f.p50_ms, f.p99_ms) {
        s.push_str(&format!(" p50 {a:.2} ms  p99 {b:.2} ms"));
    }
    if let (Some(r), Some(l), Some(w)) = (f.ratio(), f.limit, &f.limit_what) {
        s.push_str(&format!("  = {:.0} % of {l:.0} ({w})", r * 100.0));
    }
    if let Some(m) = f.peak_rss_mib {
        s.push_str(&format!("  rss {m:.0} MiB"));
    }
    if f.errors > 0 {
        s.push_str(&format!("  ERRORS {}", f.errors));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn generated_content_is_deterministic_and_sized() {
        let a: Vec<u8> = pieces(1, 3_000_000).flat_map(|b| b.to_vec()).collect();
        let b: Vec<u8> = pieces(1, 3_000_000).flat_map(|b| b.to_vec()).collect();
        assert_eq!(a.len(), 3_000_000);
        assert_eq!(a, b);
        assert_ne!(digest_of(1, 1000), digest_of(2, 1000));
        assert_ne!(a[..1 << 20], a[1 << 20..2 << 20], "pieces of one blob differ");
        assert_eq!(
            digest_of(1, 3_000_000),
            format!("sha256:{}", hex::encode(Sha256::digest(&a)))
        );
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
