//! The failover test. Three replicas behind nginx (round robin, as in the
//! source documents' Harbor deployment) share one database, one Redis and
//! one storage (a shared directory or an S3 bucket). skopeo pushes and pulls
//! multi-layer images in a loop while one replica, then another, is killed
//! with SIGKILL and restarted. Afterwards: no client saw an error after its
//! own retries, every push that reported success pulls with identical
//! digests, and no stored blob differs from its digest.
//!
//! A client's retries are skopeo's `--retry-times` and, above it, running
//! the command again, as a CI job or docker's per-layer retry would: a
//! transfer that is in flight on the replica that dies is cut (nginx can
//! retry a request elsewhere only before it has sent the body or received
//! any of the answer), and skopeo does not retry a blob cut off mid-body.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_storage::testsuite::S3Server;
use common::*;

const PUSHERS: usize = 2;
/// Layer i of every pushed image holds LAYER_UNIT * (i + 1) random bytes.
const LAYERS: usize = 4;
const LAYER_UNIT: usize = 400_000;

enum Storage {
    SharedDir,
    S3,
    /// S3, with blob downloads redirected to presigned URLs.
    S3Redirect,
}

/// A port that was free a moment ago. nginx and a restarted replica must
/// listen on ports fixed in nginx's configuration, so these are chosen
/// before they start.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nginx {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, upstreams: &[String]) -> Nginx {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let servers: String = upstreams.iter().map(|u| format!("    server {u};\n")).collect();
        let d = dir.display();
        // The upstream block is the one docs/ha.md recommends: round robin,
        // a failed connection tried on the next replica (even for POST and
        // PATCH, which is safe because bodies are streamed: nginx only
        // retries a request whose body it has not started to send).
        let conf = format!(
            "user root;\nworker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             upstream berth {{\n{servers}    keepalive 16;\n  }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
             location / {{\n      proxy_pass http://berth;\n      proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\";\n      proxy_request_buffering off;\n      proxy_buffering off;\n\
             proxy_next_upstream error timeout non_idempotent;\n      proxy_next_upstream_tries 3;\n\
             proxy_set_header Host $http_host;\n      proxy_set_header X-Forwarded-Proto $scheme;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n"
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&file)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {addr}:\n{}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            addr,
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs skopeo; Err carries its output when it failed.
fn skopeo(args: &[&str]) -> Result<String, String> {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("running skopeo");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "skopeo {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What the clients did: pushes that succeeded (repository, tag, digest),
/// pulls that succeeded, and every error a client saw.
#[derive(Default)]
struct Record {
    pushed: Vec<(String, String, String)>,
    pulls: usize,
    /// Failures that a later attempt of the same command got past.
    retried: Vec<String>,
    /// Commands that failed every attempt.
    errors: Vec<String>,
}

/// Attempts of one client command before the client gives up.
const ATTEMPTS: usize = 3;

impl Record {
    fn attempt<T>(rec: &Mutex<Record>, mut f: impl FnMut() -> Result<T, String>) -> Option<T> {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match f() {
                Ok(v) => {
                    rec.lock().unwrap().retried.extend(failures);
                    return Some(v);
                }
                Err(e) => failures.push(e),
            }
        }
        rec.lock().unwrap().errors.extend(failures);
        None
    }
}

fn push_loop(reg: String, client: usize, work: PathBuf, stop: Arc<AtomicBool>, rec: Arc<Mutex<Record>>) {
    let creds = admin_creds();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let layout = work.join(format!("push-{client}-{i}"));
        let digest = make_image_sized(&layout, LAYERS, LAYER_UNIT);
        let repo = format!("library/failover-{client}");
        let tag = format!("t{i}");
        let src = format!("oci:{}:v1", layout.display());
        let dst = format!("docker://{reg}/{repo}:{tag}");
        let r = Record::attempt(&rec, || {
            skopeo(&[
                "copy",
                "--retry-times",
                "3",
                "--dest-tls-verify=false",
                "--dest-creds",
                &creds,
                &src,
                &dst,
            ])
        });
        if r.is_some() {
            rec.lock().unwrap().pushed.push((repo, tag, digest));
        }
        let _ = std::fs::remove_dir_all(&layout);
        i += 1;
    }
}

fn pull_loop(reg: String, work: PathBuf, stop: Arc<AtomicBool>, rec: Arc<Mutex<Record>>) {
    let creds = admin_creds();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let pick = {
            let rec = rec.lock().unwrap();
            (!rec.pushed.is_empty()).then(|| rec.pushed[n % rec.pushed.len()].clone())
        };
        let Some((repo, _, digest)) = pick else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let out = work.join(format!("pull-{n}"));
        let r = Record::attempt(&rec, || {
            let _ = std::fs::remove_dir_all(&out);
            pull_and_check(&reg, &creds, &repo, &digest, &out)
        });
        let _ = std::fs::remove_dir_all(&out);
        if r.is_some() {
            rec.lock().unwrap().pulls += 1;
        }
        n += 1;
    }
}

/// Pulls `repo@digest` into an OCI layout (skopeo checks every blob against
/// its digest on the way) and checks the manifest bytes hash to `digest`.
fn pull_and_check(reg: &str, creds: &str, repo: &str, digest: &str, out: &Path) -> Result<(), String> {
    let src = format!("docker://{reg}/{repo}@{digest}");
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--retry-times",
        "3",
        "--tls-verify=false",
        "--creds",
        creds,
        &src,
    ])?;
    let got = format!("sha256:{}", sha256_hex(raw.as_bytes()));
    if got != digest {
        return Err(format!("{src}: manifest hashes to {got}"));
    }
    skopeo(&[
        "copy",
        "--retry-times",
        "3",
        "--src-tls-verify=false",
        "--src-creds",
        creds,
        &src,
        &format!("oci:{}:x", out.display()),
    ])?;
    Ok(())
}

/// Every file under `dir/blobs` hashes to the digest its path names.
fn check_blob_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.join("blobs/sha256")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if name.len() != 64 {
                continue;
            }
            let data = std::fs::read(&p).unwrap();
            assert_eq!(sha256_hex(&data), name, "corrupt blob {}", p.display());
            n += 1;
        }
    }
    n
}

fn failover(db_url: &str, storage: Storage) {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let redis_url = redis.url();
    let shared_dir = tmp.path().join("shared-storage");
    let s3 = match storage {
        Storage::S3 | Storage::S3Redirect => match S3Server::start(&tmp.path().join("s3"), "berth") {
            Some(s) => Some(s),
            None => return,
        },
        Storage::SharedDir => None,
    };
    let mut env: Vec<(String, String)> = vec![
        ("BERTH_DATABASE_URL".into(), db_url.into()),
        ("BERTH_REDIS_URL".into(), redis_url),
        ("BERTH_SERVER_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
    ];
    if matches!(storage, Storage::S3Redirect) {
        env.push(("BERTH_STORAGE_S3_REDIRECT_SECS".into(), "600".into()));
    }
    let blob_root = match &s3 {
        Some(s) => {
            for (k, v) in [
                ("BACKEND", "s3".to_string()),
                ("S3_BUCKET", "berth".into()),
                ("S3_ENDPOINT", s.endpoint.clone()),
                ("S3_ACCESS_KEY", berth_storage::testsuite::S3_ACCESS_KEY.into()),
                ("S3_SECRET_KEY", berth_storage::testsuite::S3_SECRET_KEY.into()),
            ] {
                env.push((format!("BERTH_STORAGE_{k}"), v));
            }
            s.root.join("berth")
        }
        None => {
            env.push(("BERTH_STORAGE_PATH".into(), shared_dir.display().to_string()));
            shared_dir.clone()
        }
    };
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let start = |i: usize, listen: &str| {
        Berth::start_with(
            &tmp.path().join(format!("replica-{i}")),
            &["--listen", listen],
            &env_ref,
        )
    };
    let mut replicas: Vec<Berth> = (0..3)
        .map(|i| start(i, &format!("127.0.0.1:{}", free_port())))
        .collect();
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    let nginx = Nginx::start(&tmp.path().join("nginx"), &addrs);
    let reg = nginx.addr.clone();

    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    let mut threads = Vec::new();
    for c in 0..PUSHERS {
        let (reg, work, stop, rec) = (reg.clone(), work.clone(), stop.clone(), rec.clone());
        threads.push(std::thread::spawn(move || push_loop(reg, c, work, stop, rec)));
    }
    {
        let (reg, work, stop, rec) = (reg.clone(), work.clone(), stop.clone(), rec.clone());
        threads.push(std::thread::spawn(move || pull_loop(reg, work, stop, rec)));
    }

    // Two failures, each of a different replica: SIGKILL, a pause, restart
    // on the same address (nginx's configuration names it).
    let began = Instant::now();
    for victim in [1, 2] {
        std::thread::sleep(Duration::from_secs(5));
        replicas[victim].kill();
        eprintln!("killed replica {victim} at {:?}", began.elapsed());
        std::thread::sleep(Duration::from_millis(1500));
        replicas[victim] = start(victim, &addrs[victim]);
        eprintln!("restarted replica {victim} at {:?}", began.elapsed());
    }
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    let rec = rec.lock().unwrap();
    let nginx_log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
    eprintln!(
        "nginx met {} failed upstream connections or replies (it retried them on another replica or the client retried)",
        nginx_log.lines().filter(|l| l.contains("upstream")).count()
    );
    eprintln!(
        "{} pushes and {} pulls succeeded, {} needed a second attempt, {} failed every attempt, in {:?}",
        rec.pushed.len(),
        rec.pulls,
        rec.retried.len(),
        rec.errors.len(),
        began.elapsed()
    );
    for e in &rec.retried {
        eprintln!("  retried after: {e}");
    }
    assert!(
        rec.errors.is_empty(),
        "clients saw errors:\n{}\nnginx:\n{}",
        rec.errors.join("\n"),
        std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default()
    );
    assert!(
        rec.pushed.len() >= 4,
        "too little traffic to mean anything: {}",
        rec.pushed.len()
    );
    assert!(rec.pulls >= 1, "no pull completed");

    // Every acknowledged push is there, through nginx, byte for byte.
    let creds = admin_creds();
    for (i, (repo, tag, digest)) in rec.pushed.iter().enumerate() {
        let out = work.join(format!("verify-{i}"));
        pull_and_check(&reg, &creds, repo, digest, &out).unwrap();
        let by_tag = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("docker://{reg}/{repo}:{tag}"),
        ])
        .unwrap();
        assert_eq!(
            format!("sha256:{}", sha256_hex(by_tag.as_bytes())),
            *digest,
            "{repo}:{tag}"
        );
    }
    if let (Storage::S3Redirect, Some(s3)) = (&storage, &s3) {
        // Downloads went to the bucket: a blob GET answers with a presigned URL.
        let (repo, _, digest) = &rec.pushed[0];
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &creds,
            &format!("docker://{reg}/{repo}@{digest}"),
        ])
        .unwrap();
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (status, location) = rt.block_on(async {
            let token = admin_token(&format!("http://{reg}"), &[&format!("repository:{repo}:pull")]).await;
            let c = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let r = c
                .get(format!("http://{reg}/v2/{repo}/blobs/{layer}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()["location"].to_str().unwrap().to_string(),
            )
        });
        assert_eq!(status, 307);
        assert!(location.starts_with(&s3.endpoint), "{location}");
        assert!(location.contains("X-Amz-Signature="), "{location}");
    }
    let blobs = check_blob_files(&blob_root);
    assert!(blobs >= rec.pushed.len() * LAYERS, "only {blobs} blobs stored");
    for r in &mut replicas {
        assert!(
            r.child.try_wait().unwrap().is_none(),
            "a replica exited:\n{}",
            r.log_text()
        );
    }
}

fn with_server(which: usize, storage: Storage) {
    if !have("skopeo", "--version") || !have("nginx", "-v") || !have("redis-server", "--version") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = berth_db::testing::server_urls()[which].clone();
    let Some(t) = rt.block_on(berth_db::testing::on_server(&url)) else {
        return;
    };
    failover(&t.url, storage);
    rt.block_on(t.drop_db());
}

#[test]
fn failover_on_postgresql_with_a_shared_directory() {
    with_server(0, Storage::SharedDir);
}

#[test]
fn failover_on_mariadb_with_a_shared_directory() {
    with_server(1, Storage::SharedDir);
}

#[test]
fn failover_on_postgresql_with_s3() {
    with_server(0, Storage::S3);
}

#[test]
fn failover_on_mariadb_with_s3_and_redirected_downloads() {
    with_server(1, Storage::S3Redirect);
}
