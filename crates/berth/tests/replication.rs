//! Replication between two berth servers on loopback, as an operator sets
//! it up through Harbor's API: push-based and pull-based runs of multi-layer
//! images, an index and a signature referrer, digests compared byte for
//! byte; a run taken over after the replica running it was killed; a remote
//! that answers 429 and 503 now and then; event-based and scheduled
//! triggers; a copy into distribution, the reference registry, and back
//! through a proxy cache; a proxy cache that serves while its upstream is
//! down; and webhooks that a receiver checks for payload and signature.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SIG_TYPE: &str = "application/vnd.example.signature.v1+json";

fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// Deterministic bytes, different for every seed.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The admin's view of one server: its registry API and Harbor's API.
struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    fn new(base: &str) -> Admin {
        Admin {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, String, Option<String>) {
        let mut r = self
            .http
            .request(method, format!("{}/api/v2.0{path}", self.base))
            .basic_auth("admin", Some(ADMIN_PASSWORD));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let loc = resp.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        (status, resp.text().await.unwrap(), loc)
    }

    async fn get(&self, path: &str) -> Value {
        let (s, body, _) = self.api(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Creates something and returns the id its Location names.
    async fn create(&self, path: &str, body: Value) -> i64 {
        let (s, text, loc) = self.api(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(s, 201, "POST {path}: {text}");
        loc.unwrap().rsplit('/').next().unwrap().parse().unwrap()
    }

    async fn registry_to(&self, name: &str, kind: &str, url: &str) -> i64 {
        self.create(
            "/registries",
            json!({"name": name, "type": kind, "url": url,
                   "credential": {"access_key": "admin", "access_secret": ADMIN_PASSWORD}}),
        )
        .await
    }

    /// Starts a run of `policy` and waits for it to end; returns the execution.
    async fn run(&self, policy: i64) -> Value {
        let id = self
            .create("/replication/executions", json!({"policy_id": policy}))
            .await;
        self.wait(id, Duration::from_secs(90)).await
    }

    async fn wait(&self, execution: i64, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let e = self.get(&format!("/replication/executions/{execution}")).await;
            if e["status"] != "InProgress" {
                return e;
            }
            assert!(Instant::now() < deadline, "execution {execution} did not end: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn tasks(&self, execution: i64) -> Vec<Value> {
        self.get(&format!("/replication/executions/{execution}/tasks?page_size=100"))
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    async fn log(&self, execution: i64) -> String {
        self.api(
            reqwest::Method::GET,
            &format!("/replication/executions/{execution}/log"),
            None,
        )
        .await
        .1
    }

    /// A registry client with a token for `repos`.
    async fn registry_client(&self, repos: &[&str]) -> reqwest::Client {
        let scopes: Vec<String> = repos
            .iter()
            .map(|r| format!("repository:{r}:pull,push,delete"))
            .collect();
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        client_with_token(&admin_token(&self.base, &scopes).await)
    }
}

async fn push_blob(c: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> (String, usize) {
    let d = digest_of(data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "blob push to {repo}: {}", r.text().await.unwrap());
    (d, data.len())
}

async fn put_manifest(c: &reqwest::Client, base: &str, repo: &str, reference: &str, mt: &str, body: &[u8]) -> String {
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", mt)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "manifest {repo}:{reference}: {}",
        r.text().await.unwrap()
    );
    digest_of(body)
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image of `layers` layers of `size` bytes each (seeded): its manifest bytes.
async fn push_image(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    seed: u64,
    layers: usize,
    size: usize,
) -> Vec<u8> {
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "seed": seed})).unwrap();
    let (cd, cs) = push_blob(c, base, repo, &config).await;
    let mut descs = Vec::new();
    for i in 0..layers {
        // Layer 0 is shared between every image of the same size: a mount or a skip.
        let data = bytes(if i == 0 { 1 } else { seed * 100 + i as u64 }, size + i);
        let (d, s) = push_blob(c, base, repo, &data).await;
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}));
    }
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    }))
    .unwrap();
    put_manifest(c, base, repo, tag, OCI_MANIFEST, &m).await;
    m
}

/// A signature of `subject`: an artifact manifest with a subject.
async fn push_signature(c: &reqwest::Client, base: &str, repo: &str, subject: &[u8]) -> String {
    let (ed, es) = push_blob(c, base, repo, b"{}").await;
    let (ld, ls) = push_blob(c, base, repo, b"signed, sealed, delivered").await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SIG_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ed, "size": es},
        "layers": [{"mediaType": "application/octet-stream", "digest": ld, "size": ls}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest_of(subject), "size": subject.len()},
    }))
    .unwrap();
    let d = digest_of(&m);
    put_manifest(c, base, repo, &d, OCI_MANIFEST, &m).await
}

/// Checks that `repo:tag` at `base` holds exactly `manifest`, and that
/// every blob it names pulls with its digest.
async fn assert_same_image(c: &reqwest::Client, base: &str, repo: &str, tag: &str, manifest: &[u8]) {
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{repo}:{tag} at {base}");
    assert_eq!(
        r.headers()["docker-content-digest"].to_str().unwrap(),
        digest_of(manifest)
    );
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        manifest,
        "{repo}:{tag}: bytes differ"
    );
    let m: Value = serde_json::from_slice(manifest).unwrap();
    let descs = m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&m["config"]))
        .filter(|d| d.is_object());
    for d in descs {
        let digest = d["digest"].as_str().unwrap();
        let got = c.get(format!("{base}/v2/{repo}/blobs/{digest}")).send().await.unwrap();
        assert_eq!(got.status(), 200, "{digest} of {repo}:{tag}");
        assert_eq!(digest_of(&got.bytes().await.unwrap()), digest);
    }
}

async fn referrers(c: &reqwest::Client, base: &str, repo: &str, subject: &str) -> Vec<String> {
    let v: Value = c
        .get(format!("{base}/v2/{repo}/referrers/{subject}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_replication_between_two_berths() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Berth::start(&tmp.path().join("a"));
    let b = Berth::start(&tmp.path().join("b"));
    let (aa, ba) = (Admin::new(&a.url()), Admin::new(&b.url()));

    // At A: two images, an index over both, a signature of v1, and a tag the policy leaves out.
    let ca = aa.registry_client(&["library/app"]).await;
    let base_a = a.url();
    let v1 = push_image(&ca, &base_a, "library/app", "v1", 1, 3, 30_000).await;
    let v2 = push_image(&ca, &base_a, "library/app", "v2", 2, 2, 30_000).await;
    push_image(&ca, &base_a, "library/app", "v3-rc1", 3, 1, 1000).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest_of(&v1), "size": v1.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": digest_of(&v2), "size": v2.len(), "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    put_manifest(&ca, &base_a, "library/app", "multi", OCI_INDEX, &index).await;
    let sig = push_signature(&ca, &base_a, "library/app", &v1).await;

    // Bad endpoints are refused with the reason; nothing is stored.
    let (s, t, _) = aa
        .api(
            reqwest::Method::POST,
            "/registries",
            Some(json!({"name": "x", "type": "quay", "url": b.url()})),
        )
        .await;
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("harbor, docker-registry"), "{t}");
    let (s, t, _) = aa
        .api(
            reqwest::Method::POST,
            "/registries",
            Some(json!({"name": "x", "type": "harbor", "url": "ftp://h"})),
        )
        .await;
    assert_eq!(s, 400, "{t}");
    let (s, t, _) = aa
        .api(
            reqwest::Method::POST,
            "/registries/ping",
            Some(json!({"type": "harbor", "url": b.url(), "credential": {"access_key": "admin", "access_secret": "wrong"}})),
        )
        .await;
    assert_eq!(s, 400, "wrong credentials fail the ping: {t}");
    assert!(aa.get("/registries").await.as_array().unwrap().is_empty());

    let to_b = aa.registry_to("b", "harbor", &b.url()).await;
    let (s, t, _) = aa
        .api(reqwest::Method::POST, "/registries/ping", Some(json!({"id": to_b})))
        .await;
    assert_eq!(s, 200, "{t}");
    let reg = aa.get(&format!("/registries/{to_b}")).await;
    assert_eq!(reg["status"], "healthy", "{reg}");
    assert_eq!(reg["credential"]["access_secret"], "*****");
    let (s, _, _) = aa
        .api(
            reqwest::Method::POST,
            "/registries",
            Some(json!({"name": "b", "type": "harbor", "url": b.url()})),
        )
        .await;
    assert_eq!(s, 409, "a second registry named b");
    // The password is in A's database only sealed.
    let db = std::fs::read(tmp.path().join("a").join("berth.db")).unwrap();
    assert!(
        !db.windows(ADMIN_PASSWORD.len()).any(|w| w == ADMIN_PASSWORD.as_bytes()),
        "the remote's password is stored in the clear"
    );

    // A policy needs exactly one remote end.
    let (s, t, _) = aa
        .api(
            reqwest::Method::POST,
            "/replication/policies",
            Some(json!({"name": "nowhere", "trigger": {"type": "manual"}})),
        )
        .await;
    assert_eq!(s, 400, "{t}");
    let (s, t, _) = aa
        .api(
            reqwest::Method::POST,
            "/replication/policies",
            Some(json!({"name": "bad", "dest_registry": {"id": to_b}, "filters": [{"type": "label", "value": "x"}]})),
        )
        .await;
    assert_eq!(s, 400, "{t}");

    // Push-based, into another namespace, release tags only.
    let push = aa
        .create(
            "/replication/policies",
            json!({
                "name": "to-b", "dest_registry": {"id": to_b},
                "dest_namespace": "mirror", "dest_namespace_replace_count": 0,
                "filters": [{"type": "name", "value": "library/**"},
                            {"type": "tag", "value": "*-rc*", "decoration": "excludes"}],
                "trigger": {"type": "manual"},
                "retry": {"attempts": 3, "backoff_ms": 100},
            }),
        )
        .await;
    let (s, _, _) = aa
        .api(reqwest::Method::DELETE, &format!("/registries/{to_b}"), None)
        .await;
    assert_eq!(s, 409, "a registry a policy uses is not deleted");
    let e = aa.run(push).await;
    assert_eq!(
        e["status"],
        "Succeed",
        "{e}\n{}",
        aa.log(e["id"].as_i64().unwrap()).await
    );
    assert_eq!(e["total"], 3, "{e}");
    assert_eq!(e["succeed"], 3, "{e}");
    assert_eq!(e["trigger"], "manual");
    let tasks = aa.tasks(e["id"].as_i64().unwrap()).await;
    let mut srcs: Vec<&str> = tasks.iter().map(|t| t["src_resource"].as_str().unwrap()).collect();
    srcs.sort();
    assert_eq!(srcs, ["library/app:multi", "library/app:v1", "library/app:v2"]);
    assert!(tasks
        .iter()
        .any(|t| t["dst_resource"] == "mirror/library/app:v1" && t["digest"] == digest_of(&v1)));
    let cb = ba.registry_client(&["mirror/library/app"]).await;
    for (tag, m) in [("v1", &v1), ("v2", &v2), ("multi", &index)] {
        assert_same_image(&cb, &b.url(), "mirror/library/app", tag, m).await;
    }
    assert_eq!(
        referrers(&cb, &b.url(), "mirror/library/app", &digest_of(&v1)).await,
        vec![sig.clone()]
    );
    let r = cb
        .get(format!("{}/v2/mirror/library/app/manifests/v3-rc1", b.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the tag filter left v3-rc1 out");
    // The harbor-type endpoint made the project at B.
    let (s, _, _) = ba.api(reqwest::Method::GET, "/projects/mirror", None).await;
    assert_eq!(s, 200);

    // Again: nothing to move.
    let again = aa.run(push).await;
    assert_eq!(again["status"], "Succeed");
    assert_eq!(again["skipped"], 3, "{again}");
    assert_eq!(again["bytes"], 0, "{again}");

    // Pull-based, at B, from A, flattened into `pulled`.
    let from_a = ba.registry_to("a", "harbor", &a.url()).await;
    let pull = ba
        .create(
            "/replication/policies",
            json!({"name": "from-a", "src_registry": {"id": from_a}, "dest_namespace": "pulled",
                   "filters": [{"type": "name", "value": "library/app"}, {"type": "tag", "value": "v1"}],
                   "trigger": {"type": "manual"}}),
        )
        .await;
    let e = ba.run(pull).await;
    assert_eq!(
        e["status"],
        "Succeed",
        "{e}\n{}",
        ba.log(e["id"].as_i64().unwrap()).await
    );
    assert_eq!(e["total"], 1);
    let cp = ba.registry_client(&["pulled/app"]).await;
    assert_same_image(&cp, &b.url(), "pulled/app", "v1", &v1).await;
    assert_eq!(
        referrers(&cp, &b.url(), "pulled/app", &digest_of(&v1)).await,
        vec![sig.clone()]
    );
    let p = ba.get(&format!("/replication/policies/{pull}")).await;
    assert_eq!(p["src_registry"]["name"], "a", "{p}");
    assert_eq!(p["dest_registry"]["id"], 0, "{p}");

    // Event-based: a push at A reaches B by itself; so does a delete, with deletion on.
    let evt = aa
        .create(
            "/replication/policies",
            json!({"name": "on-push", "dest_registry": {"id": to_b}, "deletion": true,
                   "filters": [{"type": "name", "value": "library/evt"}],
                   "trigger": {"type": "event_based"}}),
        )
        .await;
    let ce = aa.registry_client(&["library/evt"]).await;
    let m = push_image(&ce, &base_a, "library/evt", "latest", 9, 2, 5000).await;
    let cbe = ba.registry_client(&["library/evt"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = cbe
            .head(format!("{}/v2/library/evt/manifests/latest", b.url()))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the push at A did not reach B");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_same_image(&cbe, &b.url(), "library/evt", "latest", &m).await;
    let runs = aa.get(&format!("/replication/executions?policy_id={evt}")).await;
    assert_eq!(runs[0]["trigger"], "event_based", "{runs}");
    // A signature pushed later, by digest, follows its subject.
    let sig = push_signature(&ce, &base_a, "library/evt", &m).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !referrers(&cbe, &b.url(), "library/evt", &digest_of(&m))
        .await
        .contains(&sig)
    {
        assert!(Instant::now() < deadline, "the signature pushed at A did not reach B");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = ce
        .delete(format!("{base_a}/v2/library/evt/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = cbe
            .head(format!("{}/v2/library/evt/manifests/latest", b.url()))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the delete at A did not reach B");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Scheduled: every three seconds, until it is switched off.
    let sched = ba
        .create(
            "/replication/policies",
            json!({"name": "every-3s", "src_registry": {"id": from_a}, "dest_namespace": "timed",
                   "filters": [{"type": "name", "value": "library/app"}, {"type": "tag", "value": "v2"}],
                   "trigger": {"type": "scheduled", "trigger_settings": {"cron": "*/3 * * * * *"}}}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = ba.get(&format!("/replication/executions?policy_id={sched}")).await;
        if runs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "scheduled" && r["status"] == "Succeed")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled run finished: {runs}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ct = ba.registry_client(&["timed/app"]).await;
    assert_same_image(&ct, &b.url(), "timed/app", "v2", &v2).await;
    let (s, t, _) = ba
        .api(
            reqwest::Method::PUT,
            &format!("/replication/policies/{sched}"),
            Some(
                json!({"name": "every-3s", "src_registry": {"id": from_a}, "enabled": false,
                        "trigger": {"type": "scheduled", "trigger_settings": {"cron": "*/3 * * * * *"}}}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = ba.get(&format!("/replication/executions?policy_id={sched}")).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = ba.get(&format!("/replication/executions?policy_id={sched}")).await;
    assert_eq!(before, after, "a disabled schedule started runs");
}

/// A remote that refuses every other request for a while: 429 with
/// `Retry-After`, or 503. The run retries those steps and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_rides_out_429_and_503() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Berth::start(&tmp.path().join("a"));
    let b = Berth::start(&tmp.path().join("b"));
    let (aa, ba) = (Admin::new(&a.url()), Admin::new(&b.url()));
    let ca = aa.registry_client(&["library/flaky"]).await;
    let mut images = Vec::new();
    for (i, tag) in ["one", "two", "three"].into_iter().enumerate() {
        images.push((
            tag,
            push_image(&ca, &a.url(), "library/flaky", tag, 20 + i as u64, 3, 20_000).await,
        ));
    }
    let proxy = FaultyProxy::start(b.url(), 12).await;
    let to_b = aa.registry_to("flaky-b", "harbor", &proxy.url).await;
    let policy = aa
        .create(
            "/replication/policies",
            json!({"name": "through-faults", "dest_registry": {"id": to_b},
                   "filters": [{"type": "name", "value": "library/flaky"}],
                   "retry": {"attempts": 8, "backoff_ms": 50, "max_backoff_ms": 1500}}),
        )
        .await;
    let e = aa.run(policy).await;
    let id = e["id"].as_i64().unwrap();
    let mut logs = aa.log(id).await;
    for t in aa.tasks(id).await {
        logs.push_str(
            &aa.api(
                reqwest::Method::GET,
                &format!("/replication/executions/{id}/tasks/{}/log", t["id"]),
                None,
            )
            .await
            .1,
        );
    }
    assert_eq!(e["status"], "Succeed", "{e}\n{logs}");
    assert_eq!(e["succeed"], 3, "{e}");
    let (n429, n503) = (
        proxy.too_many.load(Ordering::Relaxed),
        proxy.unavailable.load(Ordering::Relaxed),
    );
    assert!(n429 >= 3 && n503 >= 3, "the proxy injected {n429} 429s and {n503} 503s");
    assert!(logs.contains("429"), "retries of 429 are logged:\n{logs}");
    assert!(logs.contains("503"), "retries of 503 are logged:\n{logs}");
    let cb = ba.registry_client(&["library/flaky"]).await;
    for (tag, m) in &images {
        assert_same_image(&cb, &b.url(), "library/flaky", tag, m).await;
    }
}

/// Forwards to `upstream`, but answers the first `faults` requests of every
/// second one with 429 (Retry-After: 1) or 503, alternately.
struct FaultyProxy {
    url: String,
    too_many: Arc<AtomicU64>,
    unavailable: Arc<AtomicU64>,
}

impl FaultyProxy {
    async fn start(upstream: String, faults: u64) -> FaultyProxy {
        FaultyProxy::start_with(upstream, faults, false).await
    }

    /// With `corrupt_blobs`, the last byte of every blob GET is changed.
    async fn start_with(upstream: String, faults: u64, corrupt_blobs: bool) -> FaultyProxy {
        use axum::response::IntoResponse;
        let too_many = Arc::new(AtomicU64::new(0));
        let unavailable = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::new();
        let (tm, un) = (too_many.clone(), unavailable.clone());
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (client, upstream, seen, tm, un) =
                (client.clone(), upstream.clone(), seen.clone(), tm.clone(), un.clone());
            async move {
                let n = seen.fetch_add(1, Ordering::Relaxed);
                if n < faults * 2 && n % 4 == 1 {
                    tm.fetch_add(1, Ordering::Relaxed);
                    return (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        "slow down",
                    )
                        .into_response();
                }
                if n < faults * 2 && n % 4 == 3 {
                    un.fetch_add(1, Ordering::Relaxed);
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down for a moment").into_response();
                }
                let (parts, body) = req.into_parts();
                let corrupt = corrupt_blobs && parts.method == "GET" && parts.uri.path().contains("/blobs/sha256:");
                let url = format!("{upstream}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str()));
                let mut out = client.request(parts.method, url);
                for (k, v) in &parts.headers {
                    if k != "host" {
                        out = out.header(k, v);
                    }
                }
                let stream = futures_util::TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other);
                let resp = match out.body(reqwest::Body::wrap_stream(stream)).send().await {
                    Ok(r) => r,
                    Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                };
                let mut back = axum::http::Response::builder().status(resp.status().as_u16());
                for (k, v) in resp.headers() {
                    back = back.header(k, v);
                }
                if corrupt && resp.status().is_success() {
                    let mut bytes = resp.bytes().await.unwrap().to_vec();
                    if let Some(last) = bytes.last_mut() {
                        *last ^= 0xff;
                    }
                    return back.body(axum::body::Body::from(bytes)).unwrap();
                }
                back.body(axum::body::Body::from_stream(resp.bytes_stream())).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FaultyProxy {
            url,
            too_many,
            unavailable,
        }
    }
}

/// The replica running a slow run is killed mid-way; restarted, its job is
/// taken over when the lease runs out, skips what was done and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Berth::start(&tmp.path().join("a"));
    let b = Berth::start(&tmp.path().join("b"));
    let (aa, ba) = (Admin::new(&a.url()), Admin::new(&b.url()));
    let ca = aa.registry_client(&["library/big"]).await;
    let mut images = Vec::new();
    for i in 0..6u64 {
        let tag = format!("t{i}");
        images.push((
            tag.clone(),
            push_image(&ca, &a.url(), "library/big", &tag, 40 + i, 2, 400_000).await,
        ));
    }
    let to_b = aa.registry_to("b", "harbor", &b.url()).await;
    // 800 KB a tag at 1 MB/s: a few seconds in all.
    let policy = aa
        .create(
            "/replication/policies",
            json!({"name": "slow", "dest_registry": {"id": to_b}, "speed": 1000,
                   "filters": [{"type": "name", "value": "library/big"}]}),
        )
        .await;
    let id = aa.create("/replication/executions", json!({"policy_id": policy})).await;
    // Wait for some, not all, to be done; then kill A.
    let deadline = Instant::now() + Duration::from_secs(60);
    let done_before: Vec<Value> = loop {
        let done: Vec<Value> = aa
            .tasks(id)
            .await
            .into_iter()
            .filter(|t| t["status"] == "Succeed")
            .collect();
        if !done.is_empty() {
            break done;
        }
        assert!(Instant::now() < deadline, "no task finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    a.kill();
    assert!(done_before.len() < images.len(), "the run ended before the kill");
    let a = Berth::start(&tmp.path().join("a"));
    let aa = Admin::new(&a.url());
    let e = aa.wait(id, Duration::from_secs(120)).await;
    assert_eq!(e["status"], "Succeed", "{e}\n{}", aa.log(id).await);
    assert_eq!(e["attempts"], 2, "taken over once: {e}");
    assert!(aa.log(id).await.contains("resuming"), "{}", aa.log(id).await);
    let tasks = aa.tasks(id).await;
    assert_eq!(tasks.len(), images.len());
    for t in &done_before {
        let now = tasks.iter().find(|x| x["id"] == t["id"]).unwrap();
        assert_eq!(
            now["attempts"], 1,
            "{} was done again after the takeover",
            t["src_resource"]
        );
    }
    let cb = ba.registry_client(&["library/big"]).await;
    for (tag, m) in &images {
        assert_same_image(&cb, &b.url(), "library/big", tag, m).await;
    }

    // A run that is stopped ends as Stopped and starts nothing more.
    let e2 = aa
        .create(
            "/replication/policies",
            json!({"name": "stopped", "dest_registry": {"id": to_b}, "speed": 50, "dest_namespace": "stopped",
                   "filters": [{"type": "name", "value": "library/big"}]}),
        )
        .await;
    let run = aa.create("/replication/executions", json!({"policy_id": e2})).await;
    let (s, t, _) = aa
        .api(reqwest::Method::PUT, &format!("/replication/executions/{run}"), None)
        .await;
    assert_eq!(s, 200, "{t}");
    let e = aa.wait(run, Duration::from_secs(30)).await;
    assert_eq!(e["status"], "Stopped", "{e}");
    let (s, _, _) = aa
        .api(reqwest::Method::PUT, &format!("/replication/executions/{run}"), None)
        .await;
    assert_eq!(s, 412, "an ended run cannot be stopped again");
}

/// Push-based replication into distribution, the reference registry, as a
/// `docker-registry` endpoint without credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_into_distribution() {
    if !have("docker-registry", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = Berth::start(&tmp.path().join("a"));
    let aa = Admin::new(&a.url());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = tmp.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            tmp.path().join("dist").display()
        ),
    )
    .unwrap();
    let mut dist = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "distribution did not start");
    let ca = aa.registry_client(&["library/dist"]).await;
    let m = push_image(&ca, &a.url(), "library/dist", "v1", 70, 3, 10_000).await;
    let reg = aa
        .create(
            "/registries",
            json!({"name": "dist", "type": "docker-registry", "url": url}),
        )
        .await;
    let policy = aa
        .create(
            "/replication/policies",
            json!({"name": "to-dist", "dest_registry": {"id": reg}, "filters": [{"type": "name", "value": "library/dist"}]}),
        )
        .await;
    let e = aa.run(policy).await;
    let log = aa.log(e["id"].as_i64().unwrap()).await;
    assert_eq!(e["status"], "Succeed", "{e}\n{log}");
    assert_eq!(e["succeed"], 1, "{e}");
    assert_same_image(&reqwest::Client::new(), &url, "library/dist", "v1", &m).await;

    // And back through a proxy cache project whose upstream is distribution.
    aa.create("/projects", json!({"project_name": "distcache", "registry_id": reg}))
        .await;
    let cc = aa.registry_client(&["distcache/library/dist"]).await;
    assert_same_image(&cc, &a.url(), "distcache/library/dist", "v1", &m).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tag_list(&cc, &a.url(), "distcache/library/dist")
        .await
        .contains(&"v1".to_string())
    {
        assert!(Instant::now() < deadline, "not cached from distribution");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = dist.kill();
    let _ = dist.wait();
    assert_same_image(&cc, &a.url(), "distcache/library/dist", "v1", &m).await;
}

/// The tags `repo` has at `base`, as its tag list says.
async fn tag_list(c: &reqwest::Client, base: &str, repo: &str) -> Vec<String> {
    let r = c.get(format!("{base}/v2/{repo}/tags/list")).send().await.unwrap();
    if r.status() != 200 {
        return vec![];
    }
    let v: Value = r.json().await.unwrap();
    v["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

async fn wait_for_tag(c: &reqwest::Client, base: &str, repo: &str, tag: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tag_list(c, base, repo).await.iter().any(|t| t == tag) {
        assert!(Instant::now() < deadline, "{repo}:{tag} was not cached at {base}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_cache_serves_while_its_upstream_is_down() {
    let skopeo = have("skopeo", "--version");
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Berth::start(&tmp.path().join("a"));
    let b = Berth::start(&tmp.path().join("b"));
    let (aa, ba) = (Admin::new(&a.url()), Admin::new(&b.url()));

    // Upstream: an image whose largest layer is 3 MiB (many chunks through
    // the cache), and a multi-platform index pushed by skopeo.
    let ca = aa.registry_client(&["library/app"]).await;
    let v1 = push_image(&ca, &a.url(), "library/app", "v1", 50, 4, 3 << 20).await;
    let layout = tmp.path().join("layout");
    let cred = format!("admin:{ADMIN_PASSWORD}");
    if skopeo {
        make_image(&layout, 2);
        run(Command::new("skopeo").args([
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &cred,
            &format!("oci:{}:multi", layout.display()),
            &format!("docker://{}/library/tools:multi", a.addr),
        ]));
    }

    // The proxy: a registry endpoint, and a project that mirrors it.
    let up = ba.registry_to("upstream", "harbor", &a.url()).await;
    let (s, text, _) = ba
        .api(
            reqwest::Method::POST,
            "/projects",
            Some(json!({"project_name": "hub", "registry_id": 999, "metadata": {"public": "true"}})),
        )
        .await;
    assert_eq!(s, 400, "an unknown registry is refused: {text}");
    ba.create(
        "/projects",
        json!({"project_name": "hub", "registry_id": up, "metadata": {"public": "true"}}),
    )
    .await;
    let project = ba.get("/projects/hub").await;
    assert_eq!(project["registry_id"], up, "{project}");
    let (s, text, _) = ba
        .api(reqwest::Method::DELETE, &format!("/registries/{up}"), None)
        .await;
    assert_eq!(s, 409, "a registry a proxy project uses stays: {text}");

    // A first pull goes through to upstream: same bytes, same digests.
    let cb = ba.registry_client(&["hub/library/app", "hub/library/tools"]).await;
    assert!(tag_list(&cb, &b.url(), "hub/library/app").await.is_empty());
    assert_same_image(&cb, &b.url(), "hub/library/app", "v1", &v1).await;
    let missing = cb
        .get(format!("{}/v2/hub/library/app/manifests/nope", b.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404, "upstream's 404 is the answer");
    let out = tmp.path().join("out");
    let pull_multi = |dest: &str| {
        run(Command::new("skopeo").args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-creds",
            &cred,
            &format!("docker://{}/hub/library/tools:multi", b.addr),
            &format!("oci:{}:{dest}", out.display()),
        ]));
        let index: Value = serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == dest)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let multi = if skopeo {
        let upstream_digest = aa
            .registry_client(&["library/tools"])
            .await
            .head(format!("{}/v2/library/tools/manifests/multi", a.url()))
            .header("accept", OCI_INDEX)
            .send()
            .await
            .unwrap();
        let want = upstream_digest.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string();
        let got = pull_multi("first");
        assert_eq!(got, want, "the index comes through byte-exact");
        Some(want)
    } else {
        None
    };

    // It is cached in the background; pushes are refused.
    wait_for_tag(&cb, &b.url(), "hub/library/app", "v1").await;
    if skopeo {
        wait_for_tag(&cb, &b.url(), "hub/library/tools", "multi").await;
    }
    let r = cb
        .post(format!("{}/v2/hub/library/app/blobs/uploads/", b.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert!(text.contains("DENIED") && text.contains("proxy cache"), "{text}");
    let r = cb
        .put(format!("{}/v2/hub/library/app/manifests/v2", b.url()))
        .header("content-type", OCI_MANIFEST)
        .body(v1.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a manifest push is refused too");
    // Nor does replication write into it.
    let into_cache = ba
        .create(
            "/replication/policies",
            json!({"name": "into-cache", "src_registry": {"id": up}, "dest_namespace": "hub",
                   "filters": [{"type": "name", "value": "library/app"}]}),
        )
        .await;
    let id = ba
        .create("/replication/executions", json!({"policy_id": into_cache}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let tasks = loop {
        let tasks = ba.tasks(id).await;
        if tasks.iter().any(|t| t["status"] == "Failed") {
            break tasks;
        }
        assert!(Instant::now() < deadline, "no task failed: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (s, _, _) = ba
        .api(reqwest::Method::PUT, &format!("/replication/executions/{id}"), None)
        .await;
    assert_eq!(s, 200, "the failed run (waiting to be retried) is stopped");
    let mut logs = String::new();
    for t in &tasks {
        logs.push_str(
            &ba.api(
                reqwest::Method::GET,
                &format!("/replication/executions/{id}/tasks/{}/log", t["id"]),
                None,
            )
            .await
            .1,
        );
    }
    assert!(logs.contains("is a proxy cache"), "{tasks:?}\n{logs}");

    // Upstream stops: what was cached still serves, byte-exact.
    a.kill();
    assert_same_image(&cb, &b.url(), "hub/library/app", "v1", &v1).await;
    if let Some(want) = multi {
        assert_eq!(pull_multi("offline"), want, "the index serves from the cache");
    }
    let r = cb
        .get(format!("{}/v2/hub/library/app/manifests/v9", b.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "an uncached tag with upstream down");
    let text = r.text().await.unwrap();
    assert!(text.contains(&a.url()), "the error names the upstream: {text}");
    assert!(
        b.log_text().contains("serving hub/library/app:v1 from the cache"),
        "{}",
        b.log_text()
    );
}

/// One request a webhook receiver got.
#[derive(Clone, Debug)]
struct Hook {
    path: String,
    headers: axum::http::HeaderMap,
    body: Value,
    raw: Vec<u8>,
}

/// An HTTP server that keeps what it is sent; `/flaky` answers 500 to its
/// first `failures` requests.
struct Receiver {
    url: String,
    got: Arc<std::sync::Mutex<Vec<Hook>>>,
}

impl Receiver {
    async fn start(failures: u64) -> Receiver {
        use axum::response::IntoResponse;
        let got: Arc<std::sync::Mutex<Vec<Hook>>> = Arc::default();
        let failed = Arc::new(AtomicU64::new(0));
        let sink = got.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (sink, failed) = (sink.clone(), failed.clone());
            async move {
                let path = req.uri().path().to_string();
                let headers = req.headers().clone();
                let raw = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap().to_vec();
                if path == "/flaky" && failed.fetch_add(1, Ordering::SeqCst) < failures {
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "not now").into_response();
                }
                let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                sink.lock().unwrap().push(Hook {
                    path,
                    headers,
                    body,
                    raw,
                });
                axum::http::StatusCode::OK.into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got }
    }

    /// Waits for a request to `path` of event `kind` (Harbor's type or the
    /// CloudEvents one).
    async fn wait(&self, path: &str, kind: &str) -> Hook {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self
                .got
                .lock()
                .unwrap()
                .iter()
                .find(|h| h.path == path && h.body["type"] == kind)
                .cloned();
            if let Some(h) = found {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} at {path}; got {:?}",
                self.got
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|h| (&h.path, &h.body["type"]))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// HMAC-SHA256 of `body` under `key`, as the receiver checks it.
fn hmac_sha256(key: &[u8], body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::digest([pad(0x36), body.to_vec()].concat());
    format!(
        "sha256={}",
        hex_of(&Sha256::digest([pad(0x5c), inner.to_vec()].concat()))
    )
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_signed_events_and_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Berth::start_with(
        &tmp.path().join("a"),
        &[],
        &[("BERTH_REGISTRY_WEBHOOK_RETRY_SECS", "1")],
    );
    let aa = Admin::new(&a.url());
    let recv = Receiver::start(2).await;
    let (flaky, cloud) = (format!("{}/flaky", recv.url), format!("{}/cloud", recv.url));

    // Bad policies are refused with the reason; nothing is stored.
    for (bad, why) in [
        (
            json!({"name": "x", "event_types": ["SCANNING_COMPLETED"], "targets": [{"address": cloud}]}),
            "SCANNING_COMPLETED",
        ),
        (
            json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": [{"address": "ftp://h/x"}]}),
            "ftp://",
        ),
        (
            json!({"name": "x", "event_types": ["PUSH_ARTIFACT"], "targets": []}),
            "target",
        ),
    ] {
        let (s, text, _) = aa
            .api(reqwest::Method::POST, "/projects/library/webhook/policies", Some(bad))
            .await;
        assert_eq!(s, 400, "{text}");
        assert!(text.contains(why), "{text}");
    }
    let events = vec!["PUSH_ARTIFACT", "PULL_ARTIFACT", "DELETE_ARTIFACT", "REPLICATION"];
    let policy = aa
        .create(
            "/projects/library/webhook/policies",
            json!({"name": "ci", "event_types": events, "targets": [
                {"type": "http", "address": flaky, "auth_header": "Bearer hook-token", "secret": "s3cret"},
                {"type": "http", "address": cloud, "payload_format": "CloudEvents", "secret": "s3cret"},
                {"type": "http", "address": "http://127.0.0.1:9/closed"},
            ]}),
        )
        .await;
    let shown = aa
        .api(
            reqwest::Method::GET,
            &format!("/projects/library/webhook/policies/{policy}"),
            None,
        )
        .await
        .1;
    assert!(!shown.contains("hook-token") && !shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("\"secret_set\":true"), "{shown}");
    assert!(
        !std::fs::read(a.data_dir.join("berth.db"))
            .unwrap()
            .windows(10)
            .any(|w| w == b"hook-token"),
        "the auth header is stored sealed"
    );

    // A push: Harbor's payload after two failed attempts, and CloudEvents; both signed.
    let c = aa.registry_client(&["library/app"]).await;
    let m = push_image(&c, &a.url(), "library/app", "v1", 70, 2, 1000).await;
    let digest = digest_of(&m);
    let h = recv.wait("/flaky", "PUSH_ARTIFACT").await;
    assert_eq!(h.headers["authorization"], "Bearer hook-token");
    assert_eq!(h.headers["content-type"], "application/json");
    assert_eq!(
        h.headers["x-berth-signature-256"].to_str().unwrap(),
        hmac_sha256(b"s3cret", &h.raw)
    );
    assert_eq!(h.body["operator"], "admin");
    let data = &h.body["event_data"];
    assert_eq!(data["resources"][0]["tag"], "v1", "{}", h.body);
    assert_eq!(data["resources"][0]["digest"], digest.as_str());
    assert_eq!(
        data["resources"][0]["resource_url"],
        format!("{}/library/app:v1", a.addr)
    );
    assert_eq!(data["repository"]["repo_full_name"], "library/app");
    let ce = recv.wait("/cloud", "harbor.artifact.pushed").await;
    assert_eq!(ce.headers["content-type"], "application/cloudevents+json");
    assert_eq!(
        ce.headers["x-berth-signature-256"].to_str().unwrap(),
        hmac_sha256(b"s3cret", &ce.raw)
    );
    assert!(ce.headers.get("authorization").is_none());
    assert_eq!(ce.body["specversion"], "1.0");
    assert_eq!(ce.body["source"], format!("/projects/1/webhook/policies/{policy}"));
    assert_eq!(ce.body["data"]["resources"][0]["digest"], digest.as_str());
    assert_ne!(
        hmac_sha256(b"another secret", &ce.raw),
        ce.headers["x-berth-signature-256"].to_str().unwrap(),
        "the check can fail"
    );

    // A pull and a delete.
    let r = c
        .get(format!("{}/v2/library/app/manifests/v1", a.url()))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    recv.wait("/cloud", "harbor.artifact.pulled").await;
    let r = c
        .delete(format!("{}/v2/library/app/manifests/v1", a.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let del = recv.wait("/cloud", "harbor.artifact.deleted").await;
    assert_eq!(del.body["data"]["resources"][0]["tag"], "v1");

    // A replication run into this same berth ends with a REPLICATION event.
    push_image(&c, &a.url(), "library/app", "v2", 71, 1, 500).await;
    let me = aa.registry_to("self", "harbor", &a.url()).await;
    let rp = aa
        .create(
            "/replication/policies",
            json!({"name": "to-mirror", "dest_registry": {"id": me}, "dest_namespace": "mirror",
                   "filters": [{"type": "name", "value": "library/app"}]}),
        )
        .await;
    let e = aa.run(rp).await;
    assert_eq!(e["status"], "Succeed", "{e}");
    let rep = recv.wait("/cloud", "harbor.replication.status.changed").await;
    assert_eq!(rep.body["data"]["replication"]["job_status"], "Success", "{}", rep.body);
    assert_eq!(rep.body["data"]["replication"]["execution_id"], e["id"]);

    // A push refused by a quota.
    aa.create("/projects", json!({"project_name": "tight", "storage_limit": 1000}))
        .await;
    aa.create(
        "/projects/tight/webhook/policies",
        json!({"name": "quota", "event_types": ["QUOTA_EXCEED"], "targets": [{"address": cloud}]}),
    )
    .await;
    let big = bytes(9, 5000);
    let r = aa
        .registry_client(&["tight/app"])
        .await
        .post(format!(
            "{}/v2/tight/app/blobs/uploads/?digest={}",
            a.url(),
            digest_of(&big)
        ))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "over the quota");
    assert!(r.text().await.unwrap().contains("quota"));
    let q = recv.wait("/cloud", "QUOTA_EXCEED").await;
    assert!(
        q.body["event_data"]["custom_attributes"]["Details"]
            .as_str()
            .unwrap()
            .contains("storage quota of project tight"),
        "{}",
        q.body
    );

    // The deliveries, as the API lists them; the flaky one's log has all three attempts.
    let list = aa
        .get(&format!(
            "/projects/library/webhook/policies/{policy}/executions?page_size=100"
        ))
        .await;
    let list = list.as_array().unwrap();
    let push = list
        .iter()
        .rev()
        .find(|x| x["extra_attrs"]["event_type"] == "PUSH_ARTIFACT" && x["extra_attrs"]["address"] == flaky.as_str())
        .unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!(push["status"], "Success", "{push}");
    assert_eq!(push["extra_attrs"]["attempts"], 3, "{push}");
    let eid = push["id"].as_i64().unwrap();
    let tasks = aa
        .get(&format!(
            "/projects/library/webhook/policies/{policy}/executions/{eid}/tasks"
        ))
        .await;
    let log = aa
        .api(
            reqwest::Method::GET,
            &format!(
                "/projects/library/webhook/policies/{policy}/executions/{eid}/tasks/{}/log",
                tasks[0]["id"]
            ),
            None,
        )
        .await
        .1;
    assert_eq!(log.matches("answered 500").count(), 2, "{log}");
    assert!(log.contains("answered 200"), "{log}");
    // A target nobody listens at: the log says why, and attempts remain.
    let closed = list
        .iter()
        .find(|x| x["extra_attrs"]["address"] == "http://127.0.0.1:9/closed")
        .unwrap_or_else(|| panic!("{list:?}"));
    let cid = closed["id"].as_i64().unwrap();
    let log = aa
        .api(
            reqwest::Method::GET,
            &format!("/projects/library/webhook/policies/{policy}/executions/{cid}/tasks/{cid}/log"),
            None,
        )
        .await
        .1;
    assert!(
        log.to_lowercase().contains("connection refused") && log.contains("attempts left"),
        "{log}"
    );

    // A disabled policy sends nothing more.
    let (s, text, _) = aa
        .api(
            reqwest::Method::PUT,
            &format!("/projects/library/webhook/policies/{policy}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200, "{text}");
    let before = recv.got.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(4)).await; // the policy cache's lifetime, and then some
    push_image(&c, &a.url(), "library/app", "v3", 72, 1, 300).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<String> = recv.got.lock().unwrap()[before..]
        .iter()
        .map(|h| h.body["type"].to_string())
        .collect();
    assert!(
        !after.iter().any(|t| t.contains("pushed") || t.contains("PUSH")),
        "a disabled policy delivered {after:?}"
    );
    // Its queued retries end without sending.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = aa
            .api(
                reqwest::Method::GET,
                &format!("/projects/library/webhook/policies/{policy}/executions/{cid}/tasks/{cid}/log"),
                None,
            )
            .await
            .1;
        if log.contains("the policy was disabled; not sent") {
            break;
        }
        assert!(Instant::now() < deadline, "a retry of a disabled policy: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_cache_keeps_nothing_that_fails_its_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Berth::start(&tmp.path().join("a"));
    let b = Berth::start(&tmp.path().join("b"));
    let (aa, ba) = (Admin::new(&a.url()), Admin::new(&b.url()));
    let ca = aa.registry_client(&["library/app"]).await;
    let m = push_image(&ca, &a.url(), "library/app", "v1", 80, 1, 300_000).await;
    let liar = FaultyProxy::start_with(a.url(), 0, true).await;
    let up = ba.registry_to("liar", "harbor", &liar.url).await;
    ba.create("/projects", json!({"project_name": "bad", "registry_id": up}))
        .await;
    let cb = ba.registry_client(&["bad/library/app"]).await;
    let r = cb
        .get(format!("{}/v2/bad/library/app/manifests/v1", b.url()))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        m,
        "manifests are checked by the upstream client"
    );
    let layer = serde_json::from_slice::<Value>(&m).unwrap()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let r = cb
        .get(format!("{}/v2/bad/library/app/blobs/{layer}", b.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the bytes start flowing before they can be checked");
    assert!(
        r.bytes().await.is_err(),
        "a blob whose bytes fail their digest ends in an error, never in a complete body"
    );
    // Nothing was cached: no blob, no manifest, and the log says why.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(tag_list(&cb, &b.url(), "bad/library/app").await.is_empty());
    let log = b.log_text();
    assert!(log.contains("was not stored") && log.contains(&layer), "{log}");
    let artifacts = ba.get("/projects/bad/repositories/library%2Fapp/artifacts").await;
    assert!(artifacts.as_array().is_none_or(|a| a.is_empty()), "{artifacts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_endpoints_trust_what_they_are_told_to() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let (ok, _, err) = berth(&["tls", "init", "--dir", certs.to_str().unwrap(), "127.0.0.1"], &[]);
    assert!(ok, "{err}");
    let a = Berth::start_with(
        &tmp.path().join("a"),
        &[
            "--tls-cert",
            certs.join("server.crt").to_str().unwrap(),
            "--tls-key",
            certs.join("server.key").to_str().unwrap(),
        ],
        &[],
    );
    let a_url = format!("https://{}", a.addr);
    let b = Berth::start(&tmp.path().join("b"));
    let ba = Admin::new(&b.url());
    let ca_pem = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    let endpoint = |extra: Value| {
        let mut e = json!({"name": "tls", "type": "harbor", "url": a_url,
                           "credential": {"access_key": "admin", "access_secret": ADMIN_PASSWORD}});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e
    };
    let ping = |body: Value| {
        let ba = &ba;
        async move { ba.api(reqwest::Method::POST, "/registries/ping", Some(body)).await }
    };
    // A CA the system does not know: refused, and the reason says so.
    let (s, text, _) = ping(endpoint(json!({}))).await;
    assert_eq!(s, 400, "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    // Trusted through the endpoint's own CA, or by skipping the check.
    let (s, text, _) = ping(endpoint(json!({"ca_certificate": ca_pem}))).await;
    assert_eq!(s, 200, "{text}");
    let (s, text, _) = ping(endpoint(json!({"insecure": true}))).await;
    assert_eq!(s, 200, "{text}");
    let (s, text, _) = ping(endpoint(json!({"ca_certificate": "not a certificate"}))).await;
    assert_eq!(s, 400, "{text}");

    // Content moves over it: a proxy cache of the HTTPS registry.
    let reg = ba
        .create("/registries", endpoint(json!({"ca_certificate": ca_pem})))
        .await;
    let shown = ba.get(&format!("/registries/{reg}")).await;
    assert!(!shown.to_string().contains(ADMIN_PASSWORD), "{shown}");
    let ca_client = {
        let token = {
            let r = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
                .build()
                .unwrap();
            let v: Value = r
                .get(format!(
                    "{a_url}/service/token?service=berth&scope=repository:library/app:pull,push"
                ))
                .basic_auth("admin", Some(ADMIN_PASSWORD))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["token"].as_str().unwrap().to_string()
        };
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .default_headers(h)
            .build()
            .unwrap()
    };
    let m = push_image(&ca_client, &a_url, "library/app", "v1", 90, 2, 20_000).await;
    ba.create("/projects", json!({"project_name": "tlscache", "registry_id": reg}))
        .await;
    let cb = ba.registry_client(&["tlscache/library/app"]).await;
    assert_same_image(&cb, &b.url(), "tlscache/library/app", "v1", &m).await;
}
