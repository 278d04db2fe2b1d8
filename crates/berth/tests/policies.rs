//! Guard rails, used as a client would: tag immutability rules, project
//! quotas, retention policies run as jobs, and scrub (`berth fsck` and the
//! job) against a running server.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, String, Option<String>) {
        let mut r = self
            .http
            .request(method, format!("{}/api/v2.0{path}", self.base))
            .basic_auth("admin", Some(ADMIN_PASSWORD));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let loc = r.headers().get("location").map(|v| v.to_str().unwrap().to_string());
        (status, r.text().await.unwrap(), loc)
    }

    async fn get(&self, path: &str) -> Value {
        let (s, t, _) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {t}");
        serde_json::from_str(&t).unwrap()
    }

    /// Polls a job's JSON until it has finished.
    async fn wait(&self, path: &str, status_field: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get(path).await;
            let s = v[status_field].as_str().unwrap_or("");
            if s == "Success" || s == "Error" {
                return v;
            }
            assert!(Instant::now() < deadline, "{path} did not finish: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A registry client for one repository.
struct Repo {
    base: String,
    name: String,
    c: reqwest::Client,
}

impl Repo {
    async fn new(base: &str, name: &str) -> Repo {
        let token = admin_token(base, &[&format!("repository:{name}:pull,push,delete")]).await;
        Repo {
            base: base.to_string(),
            name: name.to_string(),
            c: client_with_token(&token),
        }
    }

    /// Uploads a blob in one request; the response status and body.
    async fn blob(&self, data: &[u8]) -> (u16, String) {
        let r = self
            .c
            .post(format!(
                "{}/v2/{}/blobs/uploads/?digest={}",
                self.base,
                self.name,
                digest_of(data)
            ))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    fn manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": config.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(l), "size": l.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    async fn put_manifest(&self, reference: &str, m: &[u8]) -> (u16, String) {
        let r = self
            .c
            .put(format!("{}/v2/{}/manifests/{reference}", self.base, self.name))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(m.to_vec())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Pushes an image with one layer of its own; returns its digest.
    async fn push(&self, tag: &str, seed: &str) -> String {
        let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
        let layer = format!("layer of {seed}").into_bytes();
        for b in [&config, &layer] {
            let (s, t) = self.blob(b).await;
            assert_eq!(s, 201, "blob: {t}");
        }
        let m = Repo::manifest(&config, &[&layer]);
        let (s, t) = self.put_manifest(tag, &m).await;
        assert_eq!(s, 201, "manifest {tag}: {t}");
        digest_of(&m)
    }

    async fn delete(&self, reference: &str) -> (u16, String) {
        let r = self
            .c
            .delete(format!("{}/v2/{}/manifests/{reference}", self.base, self.name))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn tags(&self) -> Vec<String> {
        let v: Value = self
            .c
            .get(format!("{}/v2/{}/tags/list", self.base, self.name))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut t: Vec<String> = v["tags"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        t.sort();
        t
    }
}

use reqwest::Method;

#[test]
fn immutable_tags_can_be_neither_moved_nor_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api = Api::new(&b.url());
        let repo = Repo::new(&b.url(), "library/app").await;
        let v1 = repo.push("v1.0", "one").await;
        repo.push("latest", "one-latest").await;
        let (s, t, loc) = api
            .call(
                Method::POST,
                "/projects/library/immutabletagrules",
                Some(json!({
                    "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "v*"}],
                    "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}]}
                })),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        let rule_path = loc.unwrap().trim_start_matches("/api/v2.0").to_string();
        let rules = api.get("/projects/library/immutabletagrules").await;
        assert_eq!(rules[0]["tag_selectors"][0]["pattern"], "v*", "{rules}");

        // Overwriting v1.0 with other content: refused, and v1.0 unchanged.
        let config = b"{\"other\":1}".to_vec();
        let layer = b"other layer".to_vec();
        repo.blob(&config).await;
        repo.blob(&layer).await;
        let other = Repo::manifest(&config, &[&layer]);
        let (s, t) = repo.put_manifest("v1.0", &other).await;
        assert_eq!(s, 403, "{t}");
        assert!(t.contains("DENIED") && t.contains("tag v1.0 in library/app is immutable"), "{t}");
        assert!(t.contains("cannot be overwritten"), "{t}");
        let head = repo
            .c
            .head(format!("{}/v2/library/app/manifests/v1.0", b.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(head.headers()["docker-content-digest"].to_str().unwrap(), v1);
        // Pushing the same content again is fine (a re-run of a release job).
        assert_eq!(repo.push("v1.0", "one").await, v1);
        // A new matching tag can be created once.
        repo.push("v2.0", "two").await;
        // Tags the rule does not cover still move.
        let (s, t) = repo.put_manifest("latest", &other).await;
        assert_eq!(s, 201, "{t}");

        // Deleting, by every route: refused.
        let (s, t) = repo.delete("v1.0").await;
        assert_eq!(s, 403, "{t}");
        assert!(t.contains("cannot be deleted"), "{t}");
        let (s, t) = repo.delete(&v1).await;
        assert_eq!(s, 403, "delete by digest: {t}");
        let (s, t, _) = api
            .call(
                Method::DELETE,
                &format!("/projects/library/repositories/app/artifacts/{v1}/tags/v1.0"),
                None,
            )
            .await;
        assert_eq!(s, 403, "{t}");
        assert!(t.contains("immutable"), "{t}");
        let (s, t, _) = api
            .call(Method::DELETE, &format!("/projects/library/repositories/app/artifacts/{v1}"), None)
            .await;
        assert_eq!(s, 403, "{t}");
        let (s, t, _) = api.call(Method::DELETE, "/projects/library/repositories/app", None).await;
        assert_eq!(s, 403, "{t}");
        assert_eq!(repo.tags().await, ["latest", "v1.0", "v2.0"]);

        // An excluding rule: everything but dev-* is immutable in other/**.
        let other_repo = Repo::new(&b.url(), "library/other/svc").await;
        other_repo.push("dev-1", "d1").await;
        other_repo.push("rc-1", "r1").await;
        let (s, _, _) = api
            .call(
                Method::POST,
                "/projects/library/immutabletagrules",
                Some(json!({
                    "tag_selectors": [{"kind": "doublestar", "decoration": "excludes", "pattern": "dev-*"}],
                    "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "other/**"}]}
                })),
            )
            .await;
        assert_eq!(s, 201);
        assert_eq!(other_repo.delete("dev-1").await.0, 202);
        assert_eq!(other_repo.delete("rc-1").await.0, 403);

        // Disabled, the first rule no longer holds.
        let (s, t, _) = api.call(Method::PUT, &rule_path, Some(json!({"disabled": true}))).await;
        assert_eq!(s, 200, "{t}");
        assert_eq!(repo.delete("v1.0").await.0, 202);
        // Deleted, neither does the rule for v2.0.
        let (s, _, _) = api.call(Method::DELETE, &rule_path, None).await;
        assert_eq!(s, 200);
        let (s, t) = repo.put_manifest("v2.0", &other).await;
        assert_eq!(s, 201, "{t}");

        // Bad rules say what is wrong.
        let (s, t, _) = api
            .call(
                Method::POST,
                "/projects/library/immutabletagrules",
                Some(json!({"tag_selectors": [{"kind": "regexp", "decoration": "matches", "pattern": "v.*"}],
                            "scope_selectors": {"repository": [{"decoration": "repoMatches", "pattern": "**"}]}})),
            )
            .await;
        assert_eq!(s, 400);
        assert!(t.contains("regexp"), "{t}");
    });
}

/// Two clients race to create the same immutable tag with different
/// content: exactly one wins, and the tag keeps the winner's content.
#[test]
fn an_immutable_tag_is_created_once_under_concurrent_pushes() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api = Api::new(&b.url());
        let (s, _, _) = api
            .call(
                Method::POST,
                "/projects/library/immutabletagrules",
                Some(json!({
                    "tag_selectors": [{"decoration": "matches", "pattern": "**"}],
                    "scope_selectors": {"repository": [{"decoration": "repoMatches", "pattern": "**"}]}
                })),
            )
            .await;
        assert_eq!(s, 201);
        let repo = Repo::new(&b.url(), "library/race").await;
        for round in 0..10 {
            let mut manifests = Vec::new();
            for k in 0..4 {
                let config = format!("{{\"round\":{round},\"k\":{k}}}").into_bytes();
                assert_eq!(repo.blob(&config).await.0, 201);
                manifests.push(Repo::manifest(&config, &[]));
            }
            let tag = format!("r{round}");
            let puts = manifests.iter().map(|m| repo.put_manifest(&tag, m));
            let results = futures_util::future::join_all(puts).await;
            let winners: Vec<usize> = (0..4).filter(|&i| results[i].0 == 201).collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            for (i, (s, t)) in results.iter().enumerate() {
                if i != winners[0] {
                    assert_eq!(*s, 403, "{t}");
                }
            }
            let head = repo
                .c
                .head(format!("{}/v2/library/race/manifests/{tag}", b.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.headers()["docker-content-digest"].to_str().unwrap(),
                digest_of(&manifests[winners[0]])
            );
        }
    });
}

#[test]
fn quotas_refuse_pushes_that_do_not_fit_and_count_shared_layers_once() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api = Api::new(&b.url());
        let (s, t, loc) = api
            .call(
                Method::POST,
                "/projects",
                Some(json!({"project_name": "team", "storage_limit": 100_000})),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        let pid = loc.unwrap().rsplit('/').next().unwrap().to_string();
        let quota = api.get(&format!("/quotas/{pid}")).await;
        assert_eq!(quota["hard"]["storage"], 100_000, "{quota}");
        assert_eq!(quota["used"]["storage"], 0);

        let a = Repo::new(&b.url(), "team/a").await;
        let layer = vec![7u8; 60_000];
        let config = b"{\"a\":1}".to_vec();
        assert_eq!(a.blob(&layer).await.0, 201);
        assert_eq!(a.blob(&config).await.0, 201);
        let (s, t) = a.put_manifest("v1", &Repo::manifest(&config, &[&layer])).await;
        assert_eq!(s, 201, "{t}");
        let used = api.get(&format!("/quotas/{pid}")).await["used"]["storage"]
            .as_i64()
            .unwrap();
        assert!(used > 60_000 && used < 61_000, "{used}");

        // A second 60 kB layer does not fit: refused with the spec's code
        // and a message that names the quota and the overshoot.
        let big = vec![8u8; 60_000];
        let (s, t) = a.blob(&big).await;
        assert_eq!(s, 403, "{t}");
        assert!(t.contains("DENIED"), "{t}");
        assert!(t.contains("storage quota of project team exceeded"), "{t}");
        assert!(t.contains("over its limit of 97.7 KiB"), "{t}");
        let head =
            a.c.head(format!("{}/v2/team/a/blobs/{}", b.url(), digest_of(&big)))
                .send()
                .await
                .unwrap();
        assert_eq!(head.status(), 404, "nothing of the refused blob is visible");

        // The same layer in another repository of the project adds nothing.
        let b_repo = Repo::new(&b.url(), "team/b").await;
        assert_eq!(b_repo.blob(&layer).await.0, 201, "a shared layer is counted once");
        let config_b = b"{\"b\":1}".to_vec();
        assert_eq!(b_repo.blob(&config_b).await.0, 201);
        let (s, t) = b_repo.put_manifest("v1", &Repo::manifest(&config_b, &[&layer])).await;
        assert_eq!(s, 201, "{t}");
        let summary = api.get("/projects/team/summary").await;
        let used2 = summary["quota"]["used"]["storage"].as_i64().unwrap();
        assert!(used2 - used < 1_000, "shared layer counted once: {used} then {used2}");

        // Raised, the same push goes through.
        let (s, t, _) = api
            .call(
                Method::PUT,
                &format!("/quotas/{pid}"),
                Some(json!({"hard": {"storage": 200_000}})),
            )
            .await;
        assert_eq!(s, 200, "{t}");
        assert_eq!(a.blob(&big).await.0, 201);

        // An artifact count limit.
        let (s, _, _) = api
            .call(
                Method::PUT,
                &format!("/quotas/{pid}"),
                Some(json!({"hard": {"count": 2}})),
            )
            .await;
        assert_eq!(s, 200);
        let config3 = b"{\"c\":3}".to_vec();
        assert_eq!(a.blob(&config3).await.0, 201);
        let (s, t) = a.put_manifest("v3", &Repo::manifest(&config3, &[&layer])).await;
        assert_eq!(s, 403, "{t}");
        assert!(t.contains("artifact count quota of project team exceeded"), "{t}");
        // Tagging an artifact the project holds adds none.
        let (s, t) = a.put_manifest("again", &Repo::manifest(&config, &[&layer])).await;
        assert_eq!(s, 201, "{t}");
        let quotas = api.get(&format!("/quotas?reference=project&reference_id={pid}")).await;
        assert_eq!(quotas[0]["used"]["count"], 2, "{quotas}");
        assert_eq!(quotas[0]["hard"]["count"], 2, "{quotas}");

        // Bad limits and unknown resources are refused.
        let (s, t, _) = api
            .call(
                Method::PUT,
                &format!("/quotas/{pid}"),
                Some(json!({"hard": {"storage": -5}})),
            )
            .await;
        assert_eq!(s, 400, "{t}");
        let (s, t, _) = api
            .call(
                Method::PUT,
                &format!("/quotas/{pid}"),
                Some(json!({"hard": {"cpu": 1}})),
            )
            .await;
        assert_eq!(s, 400, "{t}");
        assert!(t.contains("cpu"), "{t}");
    });
}

#[test]
fn retention_keeps_what_its_rules_select_and_deletes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api = Api::new(&b.url());
        let repo = Repo::new(&b.url(), "library/web").await;
        let mut digests = Vec::new();
        for i in 1..=5 {
            digests.push(repo.push(&format!("v{i}"), &format!("web{i}")).await);
            // Distinct push times.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        repo.push("release-1", "web-release").await;
        let untouched = Repo::new(&b.url(), "library/tools").await;
        untouched.push("v1", "tools1").await;
        untouched.push("v2", "tools2").await;
        // v1 is immutable: retention must keep it too.
        let (s, _, _) = api
            .call(
                Method::POST,
                "/projects/library/immutabletagrules",
                Some(json!({"tag_selectors": [{"decoration": "matches", "pattern": "v1"}],
                            "scope_selectors": {"repository": [{"decoration": "repoMatches", "pattern": "web"}]}})),
            )
            .await;
        assert_eq!(s, 201);

        let project_id = api.get("/projects/library").await["project_id"].as_i64().unwrap();
        let policy = json!({
            "algorithm": "or",
            "rules": [
                {"action": "retain", "template": "latestPushedK", "params": {"latestPushedK": 2},
                 "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "v*"}],
                 "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "web"}]}},
                {"action": "retain", "template": "always", "params": {},
                 "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "release-*"}],
                 "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "web"}]}}
            ],
            "trigger": {"kind": "Schedule", "settings": {"cron": ""}},
            "scope": {"level": "project", "ref": project_id}
        });
        let (s, t, loc) = api.call(Method::POST, "/retentions", Some(policy.clone())).await;
        assert_eq!(s, 201, "{t}");
        let pol = loc.unwrap().trim_start_matches("/api/v2.0").to_string();
        let meta = api.get("/projects/library/metadatas").await;
        assert_eq!(format!("/retentions/{}", meta["retention_id"].as_str().unwrap()), pol);
        let stored = api.get(&pol).await;
        assert_eq!(stored["rules"][0]["params"]["latestPushedK"], 2, "{stored}");

        // A dry run reports and deletes nothing.
        let (s, t, loc) = api.call(Method::POST, &format!("{pol}/executions"), Some(json!({"dry_run": true}))).await;
        assert_eq!(s, 201, "{t}");
        let exec = loc.unwrap().trim_start_matches("/api/v2.0").to_string();
        let execs_path = format!("{pol}/executions");
        let wait_exec = |path: String| {
            let api = &api;
            let execs_path = execs_path.clone();
            async move {
                let id: i64 = path.rsplit('/').next().unwrap().parse().unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let list = api.get(&execs_path).await;
                    let e = list.as_array().unwrap().iter().find(|e| e["id"] == id).cloned().unwrap();
                    if e["status"] == "Success" || e["status"] == "Error" {
                        return e;
                    }
                    assert!(Instant::now() < deadline, "retention run did not finish: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let e = wait_exec(exec.clone()).await;
        assert_eq!(e["status"], "Success", "{e}");
        assert_eq!(e["dry_run"], true);
        let tasks = api.get(&format!("{exec}/tasks")).await;
        let web = tasks.as_array().unwrap().iter().find(|t| t["repository"] == "library/web").unwrap().clone();
        assert_eq!(web["total"], 6, "{tasks}");
        // v2 and v3 would go; v1 is kept as immutable; v4, v5, release-1 retained.
        assert_eq!(web["deleted"].as_array().unwrap().len(), 2, "{web}");
        assert_eq!(web["kept"].as_array().unwrap().len(), 1, "{web}");
        assert!(!tasks.as_array().unwrap().iter().any(|t| t["repository"] == "library/tools"), "{tasks}");
        assert_eq!(repo.tags().await, ["release-1", "v1", "v2", "v3", "v4", "v5"]);
        let log = api.call(Method::GET, &format!("{exec}/tasks/1"), None).await.1;
        assert!(log.contains("would delete"), "{log}");

        // The real run.
        let (s, t, loc) = api.call(Method::POST, &format!("{pol}/executions"), Some(json!({"dry_run": false}))).await;
        assert_eq!(s, 201, "{t}");
        let e = wait_exec(loc.unwrap().trim_start_matches("/api/v2.0").to_string()).await;
        assert_eq!(e["status"], "Success", "{e}");
        assert_eq!(repo.tags().await, ["release-1", "v1", "v4", "v5"]);
        assert_eq!(untouched.tags().await, ["v1", "v2"]);
        let gone = repo
            .c
            .head(format!("{}/v2/library/web/manifests/{}", b.url(), digests[1]))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 404);

        // Unsupported rules are refused with the reason; a bad cron too.
        let mut bad = policy.clone();
        bad["rules"][0]["template"] = json!("mostPopular");
        let (s, t, _) = api.call(Method::PUT, &pol, Some(bad)).await;
        assert_eq!(s, 400, "{t}");
        assert!(t.contains("mostPopular"), "{t}");
        let mut bad = policy.clone();
        bad["trigger"]["settings"]["cron"] = json!("0 0 25 * * *");
        let (s, t, _) = api.call(Method::PUT, &pol, Some(bad)).await;
        assert_eq!(s, 400, "{t}");
        assert!(t.contains("outside 0-23"), "{t}");

        // Scheduled: a run starts by itself.
        let mut every = policy.clone();
        every["trigger"]["settings"]["cron"] = json!("*/2 * * * * *");
        let (s, t, _) = api.call(Method::PUT, &pol, Some(every)).await;
        assert_eq!(s, 200, "{t}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = api.get(&format!("{pol}/executions")).await;
            if list.as_array().unwrap().iter().any(|e| e["trigger"] == "SCHEDULE" && e["status"] == "Success") {
                break;
            }
            assert!(Instant::now() < deadline, "no scheduled run: {list}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let (s, _, _) = api.call(Method::DELETE, &pol, None).await;
        assert_eq!(s, 200);
    });
}

#[test]
fn fsck_finds_corrupt_and_missing_content() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let b = Berth::start(&data);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (repo_base, layer_digest, config_digest) = rt.block_on(async {
        let repo = Repo::new(&b.url(), "library/scrub").await;
        repo.push("v1", "scrub").await;
        (
            b.url(),
            digest_of(b"layer of scrub"),
            digest_of(b"{\"seed\":\"scrub\"}"),
        )
    });
    let fsck = || {
        let out = Command::new(BERTH)
            .args(["fsck", "--json", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), report)
    };
    let (ok, clean) = fsck();
    assert!(ok, "{clean}");
    assert_eq!(clean["objects_checked"], 3, "{clean}");

    let path = |d: &str| {
        let hex = d.trim_start_matches("sha256:");
        data.join("storage/blobs/sha256").join(&hex[..2]).join(hex)
    };
    // Flip the layer's bytes (same length), remove the config.
    std::fs::write(path(&layer_digest), b"LAYER OF SCRUB").unwrap();
    std::fs::remove_file(path(&config_digest)).unwrap();
    let (ok, report) = fsck();
    assert!(!ok, "fsck exits 1 when something is wrong");
    assert_eq!(report["corrupt_count"], 1, "{report}");
    assert!(
        report["corrupt"][0].as_str().unwrap().starts_with(&layer_digest),
        "{report}"
    );
    assert!(
        report["corrupt"][0].as_str().unwrap().contains("hash to sha256:"),
        "{report}"
    );
    assert_eq!(report["missing_count"], 1, "{report}");
    assert!(
        report["missing"][0].as_str().unwrap().starts_with(&config_digest),
        "{report}"
    );

    // The same as a job through the API, with the findings in its log.
    rt.block_on(async {
        let api = Api::new(&repo_base);
        let (s, t, loc) = api.call(Method::POST, "/system/scrub", None).await;
        assert_eq!(s, 201, "{t}");
        let job = api
            .wait(loc.unwrap().trim_start_matches("/api/v2.0"), "job_status")
            .await;
        assert_eq!(job["job_status"], "Success", "{job}");
        assert_eq!(job["progress"]["corrupt_count"], 1, "{job}");
        assert_eq!(job["progress"]["missing_count"], 1, "{job}");
        assert!(job["log"].as_str().unwrap().contains(&layer_digest), "{job}");
    });
}
