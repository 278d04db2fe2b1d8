//! Garbage collection while clients push, share layers, delete and push
//! again: the classic race in which a collector deletes a layer that a push
//! is about to reference. Afterwards every manifest a client was told was
//! pushed (and not deleted) pulls in full with identical digests, and storage
//! holds nothing that nothing references.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CLIENTS: usize = 4;
const POOL: usize = 8;
const RUN_FOR: Duration = Duration::from_secs(8);

/// Deterministic pseudo-random bytes.
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

fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// A manifest a client was told is stored: repository, tag, digest, and the
/// digests and bytes of what it references.
#[derive(Clone)]
struct Pushed {
    repo: String,
    tag: String,
    digest: String,
    manifest: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
}

#[derive(Default)]
struct Tally {
    pushed: usize,
    refused: usize,
    deleted: usize,
}

/// Pushes a blob unless the registry says it has it. Ok(false): the
/// registry refused (the blob was collected mid-push); the client retries.
async fn ensure_blob(c: &reqwest::Client, base: &str, repo: &str, d: &str, data: &[u8]) -> bool {
    let head = c.head(format!("{base}/v2/{repo}/blobs/{d}")).send().await.unwrap();
    if head.status() == 200 {
        return true;
    }
    let r = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{base}{loc}{sep}digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        201 => true,
        400 => {
            let t = r.text().await.unwrap();
            assert!(t.contains("BLOB_UPLOAD_INVALID"), "{t}");
            false
        }
        s => panic!("blob upload answered {s}: {}", r.text().await.unwrap()),
    }
}

async fn client(k: usize, urls: Vec<String>, token: String, stop: Instant, alive: Arc<Mutex<Vec<Pushed>>>) -> Tally {
    let c = client_with_token(&token);
    let repo = format!("library/race-{k}");
    let pool: Vec<Vec<u8>> = (0..POOL).map(|i| bytes(i as u64 + 1, 4096 + 7919 * i)).collect();
    let mut tally = Tally::default();
    let mut mine: Vec<Pushed> = Vec::new();
    let mut i = 0u64;
    while Instant::now() < stop {
        i += 1;
        let base = &urls[(k + i as usize) % urls.len()];
        // Three layers from the shared pool, and a config of this push's own.
        let picks: Vec<usize> = (0..3).map(|j| ((i as usize) * 3 + j * 5 + k) % POOL).collect();
        let config = serde_json::to_vec(&json!({"client": k, "push": i, "os": "linux"})).unwrap();
        let mut blobs = vec![(digest_of(&config), config.clone())];
        for p in picks.iter().collect::<BTreeSet<_>>() {
            blobs.push((digest_of(&pool[*p]), pool[*p].clone()));
        }
        let mut ok = true;
        for (d, data) in &blobs {
            ok &= ensure_blob(&c, base, &repo, d, data).await;
        }
        if !ok {
            tally.refused += 1;
            continue;
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0].0, "size": blobs[0].1.len()},
            "layers": blobs[1..].iter().map(|(d, b)| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": b.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let tag = format!("t{i}");
        let r = c
            .put(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => {
                tally.pushed += 1;
                mine.push(Pushed {
                    repo: repo.clone(),
                    tag,
                    digest: digest_of(&manifest),
                    manifest,
                    blobs,
                });
            }
            // A layer it checked was collected before the manifest arrived:
            // refused, and nothing of it was stored.
            400 => {
                let t = r.text().await.unwrap();
                assert!(t.contains("MANIFEST_BLOB_UNKNOWN"), "{t}");
                tally.refused += 1;
            }
            s => panic!("manifest put answered {s}: {}", r.text().await.unwrap()),
        }
        // Now and then, delete one of its own images by digest.
        if i.is_multiple_of(3) && !mine.is_empty() {
            let gone = mine.remove((i as usize / 3) % mine.len());
            let r = c
                .delete(format!("{base}/v2/{}/manifests/{}", gone.repo, gone.digest))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
            tally.deleted += 1;
        }
    }
    alive.lock().unwrap().extend(mine);
    tally
}

/// Runs `berth gc` against the replicas' database and storage.
fn gc(env: &[(&str, &str)], data_dir: &Path) -> Value {
    let mut cmd = Command::new(BERTH);
    cmd.args(["gc", "--min-age", "0s", "--untagged", "--json", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "berth gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stored_digests(storage: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = storage.join("blobs").join("sha256");
    for prefix in std::fs::read_dir(&root).unwrap() {
        for f in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            out.insert(format!("sha256:{}", f.unwrap().file_name().to_str().unwrap()));
        }
    }
    out
}

async fn race(replicas: usize, db_url: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let storage = tmp.path().join("shared-storage");
    let mut env: Vec<(String, String)> = vec![("BERTH_STORAGE_PATH".into(), storage.to_str().unwrap().into())];
    let single = tmp.path().join("single");
    if let Some(u) = db_url {
        env.push(("BERTH_DATABASE_URL".into(), u.into()));
    } else {
        // One SQLite file that the replica and `berth gc` share.
        std::fs::create_dir_all(&single).unwrap();
        env.push((
            "BERTH_DATABASE_URL".into(),
            format!("sqlite://{}?mode=rwc", single.join("berth.db").display()),
        ));
    }
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let servers: Vec<Berth> = (0..replicas)
        .map(|i| Berth::start_with(&tmp.path().join(format!("replica-{i}")), &[], &env_ref))
        .collect();
    let urls: Vec<String> = servers.iter().map(Berth::url).collect();
    let scopes: Vec<String> = (0..CLIENTS)
        .map(|k| format!("repository:library/race-{k}:pull,push,delete"))
        .collect();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let token = admin_token(&urls[0], &scopes).await;

    let stop = Instant::now() + RUN_FOR;
    let alive = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| tokio::spawn(client(k, urls.clone(), token.clone(), stop, alive.clone())))
        .collect();
    // The collector, in a loop, with no safety window at all.
    let gc_env = env.clone();
    let gc_dir = tmp.path().join("gc");
    let collector = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = gc_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut runs = 0;
        let mut removed = 0;
        while Instant::now() < stop {
            let r = gc(&env, &gc_dir);
            runs += 1;
            removed += r["blobs_deleted"].as_u64().unwrap() + r["manifests_deleted"].as_u64().unwrap();
        }
        (runs, removed)
    });
    let mut total = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        total.pushed += t.pushed;
        total.refused += t.refused;
        total.deleted += t.deleted;
    }
    let (runs, removed) = collector.await.unwrap();
    eprintln!(
        "{replicas} replica(s): {} pushes acknowledged, {} refused mid-collection, {} deleted; {runs} collections removed {removed} objects",
        total.pushed, total.refused, total.deleted
    );
    assert!(total.pushed >= 20, "too few pushes to mean anything");
    assert!(
        runs >= 3 && removed > 0,
        "the collector did not race: {runs} runs, {removed} removed"
    );

    // A last collection with nobody pushing.
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    gc(&env_ref, &tmp.path().join("gc"));

    // Everything acknowledged and not deleted pulls in full, from every replica.
    let alive = alive.lock().unwrap().clone();
    let c = client_with_token(&token);
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for (n, p) in alive.iter().enumerate() {
        let base = &urls[n % urls.len()];
        let r = c
            .get(format!("{base}/v2/{}/manifests/{}", p.repo, p.tag))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}:{} was acknowledged but is gone", p.repo, p.tag);
        assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), p.digest);
        assert_eq!(r.bytes().await.unwrap().to_vec(), p.manifest);
        wanted.insert(p.digest.clone());
        for (d, data) in &p.blobs {
            let r = c.get(format!("{base}/v2/{}/blobs/{d}", p.repo)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{d} of {}:{} is gone", p.repo, p.tag);
            let got = r.bytes().await.unwrap();
            assert_eq!(digest_of(&got), *d, "{d} of {}:{} is corrupt", p.repo, p.tag);
            assert_eq!(got.len(), data.len());
            wanted.insert(d.clone());
        }
    }
    // And storage holds exactly that: nothing unreferenced survived a
    // collection with no window, nothing referenced is missing.
    let stored = stored_digests(&storage);
    let extra: Vec<&String> = stored.difference(&wanted).collect();
    let missing: Vec<&String> = wanted.difference(&stored).collect();
    assert!(missing.is_empty(), "referenced but not stored: {missing:?}");
    assert!(extra.is_empty(), "stored but referenced by nothing: {extra:?}");
    drop(servers);
}

#[test]
fn gc_races_pushes_and_deletes_on_sqlite() {
    tokio::runtime::Runtime::new().unwrap().block_on(race(1, None));
}

#[test]
fn gc_races_pushes_and_deletes_on_postgresql_with_two_replicas() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = berth_db::testing::server_urls()[0].clone();
        let Some(t) = berth_db::testing::on_server(&url).await else {
            return;
        };
        race(2, Some(&t.url)).await;
        t.drop_db().await;
    });
}

#[test]
fn gc_dry_run_reports_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let b = Berth::start(&data);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = rt.block_on(admin_token(&b.url(), &["repository:library/dry:pull,push,delete"]));
    let c = client_with_token(&token);
    let orphan = bytes(99, 50_000);
    let d = digest_of(&orphan);
    assert!(rt.block_on(ensure_blob(&c, &b.url(), "library/dry", &d, &orphan)));
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(BERTH);
        cmd.args(["gc", "--json", "--data-dir"]).arg(&data).args(extra);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // Within the default window (1h): kept.
    assert_eq!(run(&[])["blobs_deleted"], 0);
    let dry = run(&["--min-age", "0s", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["blobs_deleted"], 1);
    assert_eq!(dry["bytes_freed"], 50_000);
    let head = |c: &reqwest::Client| {
        rt.block_on(c.head(format!("{}/v2/library/dry/blobs/{d}", b.url())).send())
            .unwrap()
            .status()
    };
    assert_eq!(head(&c), 200, "a dry run removed it");
    let real = run(&["--min-age", "0s"]);
    assert_eq!(real["blobs_deleted"], 1);
    assert_eq!(real["bytes_freed"], 50_000);
    assert_eq!(head(&c), 404);
    // A bad duration is refused before anything is opened.
    let out = Command::new(BERTH)
        .args(["gc", "--min-age", "soon", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
}

/// Harbor's GC API: a manual run is a job that some replica claims; its
/// status, progress and log are readable while and after it runs.
#[test]
fn gc_through_harbors_api_runs_as_a_job() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let token = admin_token(&b.url(), &["repository:library/api-gc:pull,push"]).await;
        let c = client_with_token(&token);
        let orphan = bytes(7, 30_000);
        let d = digest_of(&orphan);
        assert!(ensure_blob(&c, &b.url(), "library/api-gc", &d, &orphan).await);

        let api = reqwest::Client::new();
        let admin = |r: reqwest::RequestBuilder| r.basic_auth("admin", Some(ADMIN_PASSWORD));
        // A schedule that cannot run is refused with the reason.
        let r = admin(api.post(format!("{}/api/v2.0/system/gc/schedule", b.url())))
            .json(&json!({"schedule": {"type": "Custom", "cron": "61 * * * * *"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("61 is outside 0-59"));
        // Anonymous callers may not start one.
        let r = api
            .post(format!("{}/api/v2.0/system/gc/schedule", b.url()))
            .json(&json!({"schedule": {"type": "Manual"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        let r = admin(api.post(format!("{}/api/v2.0/system/gc/schedule", b.url())))
            .json(&json!({"schedule": {"type": "Manual"}, "parameters": {"delete_untagged": true, "min_age_secs": 0}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with("/api/v2.0/system/gc/"), "{location}");

        let deadline = Instant::now() + Duration::from_secs(30);
        let job = loop {
            let j: Value = admin(api.get(format!("{}{location}", b.url())))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if j["job_status"] == "Success" || j["job_status"] == "Error" {
                break j;
            }
            assert!(Instant::now() < deadline, "the job did not finish: {j}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(job["job_status"], "Success", "{job}");
        assert_eq!(job["job_name"], "GARBAGE_COLLECTION");
        assert_eq!(job["progress"]["blobs_deleted"], 1, "{job}");
        assert_eq!(job["progress"]["bytes_freed"], 30_000, "{job}");
        let log = admin(api.get(format!("{}{location}/log", b.url())))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(log.contains("removed 0 manifests and 1 blobs"), "{log}");
        let list: Value = admin(api.get(format!("{}/api/v2.0/system/gc", b.url())))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list.as_array().unwrap().len(), 1);
        let head = c
            .head(format!("{}/v2/library/api-gc/blobs/{d}", b.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 404, "the job removed the orphan");
        let r = admin(api.get(format!("{}/api/v2.0/system/gc/999", b.url())))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    });
}

/// A cron schedule starts collections by itself; removing it stops them.
#[test]
fn gc_schedule_runs_collections() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let token = admin_token(&b.url(), &["repository:library/cron-gc:pull,push"]).await;
        let c = client_with_token(&token);
        let orphan = bytes(11, 20_000);
        let d = digest_of(&orphan);
        assert!(ensure_blob(&c, &b.url(), "library/cron-gc", &d, &orphan).await);
        let api = reqwest::Client::new();
        let admin = |r: reqwest::RequestBuilder| r.basic_auth("admin", Some(ADMIN_PASSWORD));
        let get_schedule = || async {
            admin(api.get(format!("{}/api/v2.0/system/gc/schedule", b.url())))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        };
        assert_eq!(get_schedule().await["schedule"]["type"], "None");
        // Every three seconds, Harbor's six-field form.
        let r = admin(api.put(format!("{}/api/v2.0/system/gc/schedule", b.url())))
            .json(&json!({"schedule": {"type": "Custom", "cron": "*/3 * * * * *"}, "parameters": {"min_age_secs": 0}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let s = get_schedule().await;
        assert_eq!(s["schedule"]["type"], "Custom", "{s}");
        assert_eq!(s["schedule"]["cron"], "*/3 * * * * *");
        assert!(s["schedule"]["next_scheduled_time"].is_string(), "{s}");

        // Generous: on a loaded machine a run waits for the runner's poll.
        let deadline = Instant::now() + Duration::from_secs(90);
        let job = loop {
            let list: Value = admin(api.get(format!("{}/api/v2.0/system/gc?page_size=100", b.url())))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(j) = list
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["job_kind"] == "SCHEDULE" && j["job_status"] == "Success")
            {
                break j.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no scheduled collection finished: {list}\nserver log:\n{}",
                b.log_text()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(job["triggered_by"], "schedule", "{job}");
        let head = c
            .head(format!("{}/v2/library/cron-gc/blobs/{d}", b.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 404, "a scheduled collection removed the orphan");

        let r = admin(api.put(format!("{}/api/v2.0/system/gc/schedule", b.url())))
            .json(&json!({"schedule": {"type": "None"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(get_schedule().await["schedule"]["type"], "None");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let count = |v: &Value| v.as_array().unwrap().len();
        let before: Value = admin(api.get(format!("{}/api/v2.0/system/gc", b.url())))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(7)).await;
        let after: Value = admin(api.get(format!("{}/api/v2.0/system/gc", b.url())))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            count(&before),
            count(&after),
            "no collections after the schedule was removed"
        );
    });
}
