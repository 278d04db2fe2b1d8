//! The binary as an operator meets it: configuration errors, startup
//! refusals, graceful shutdown, restarts, crashes and memory use.

mod common;

use std::time::Duration;

use common::*;
use rand_like::Rng;
use serde_json::{json, Value};

/// A tiny deterministic generator; tests need varied sizes, not secrets.
mod rand_like {
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        pub fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut v = Vec::with_capacity(n + 8);
            while v.len() < n {
                v.extend_from_slice(&self.next().to_le_bytes());
            }
            v.truncate(n);
            v
        }
    }
}

#[test]
fn version_and_config_check() {
    let (ok, out, _) = berth(&["--version"], &[]);
    assert!(ok);
    assert!(out.starts_with("berth "), "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("berth.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[server]\nlisten = \"0.0.0.0:5123\"\n",
            tmp.path().join("d").display()
        ),
    )
    .unwrap();
    let (ok, out, err) = berth(
        &["config", "check", "--config", cfg.to_str().unwrap()],
        &[("BERTH_SERVER_SHUTDOWN_GRACE_SECS", "9")],
    );
    assert!(ok, "{err}");
    assert!(out.contains(&format!("config file: {}", cfg.display())), "{out}");
    assert!(out.contains("server.listen = \"0.0.0.0:5123\""), "{out}");
    assert!(out.contains(&format!("# file {}", cfg.display())), "{out}");
    assert!(out.contains("server.shutdown_grace_secs = 9"), "{out}");
    assert!(out.contains("# environment BERTH_SERVER_SHUTDOWN_GRACE_SECS"), "{out}");
    assert!(
        out.contains(&format!(
            "blobs:    filesystem at {}",
            tmp.path().join("d/storage").display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "metadata: SQLite database {}",
            tmp.path().join("d/berth.db").display()
        )),
        "{out}"
    );
    // BERTH_CONFIG names the file too.
    let (ok, out, _) = berth(&["config", "check"], &[("BERTH_CONFIG", cfg.to_str().unwrap())]);
    assert!(ok && out.contains("0.0.0.0:5123"), "{out}");
}

#[test]
fn configuration_mistakes_stop_berth_before_it_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let data_s = data.to_str().unwrap();
    // A config file at the wrong path: an error, never a silent default.
    let (ok, _, err) = berth(
        &["serve", "--config", "/etc/berth/nowhere.toml", "--data-dir", data_s],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("/etc/berth/nowhere.toml does not exist"), "{err}");
    // A misspelt key.
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[storage]\nroot = \"/srv/registry\"\n").unwrap();
    let (ok, _, err) = berth(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(err.contains("unknown field `root`"), "{err}");
    // A misspelt environment variable.
    let (ok, _, err) = berth(&["serve", "--data-dir", data_s], &[("BERTH_STORAGE_ROOT", "/srv")]);
    assert!(!ok);
    assert!(err.contains("BERTH_STORAGE_ROOT is not a berth setting"), "{err}");
    // Storage that cannot be written.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (ok, _, err) = berth(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_s],
        &[("BERTH_STORAGE_PATH", file.join("blobs").to_str().unwrap())],
    );
    assert!(!ok);
    assert!(
        err.contains("opening blob storage") && err.contains(file.to_str().unwrap()),
        "{err}"
    );
    let (ok, _, err) = berth(
        &["config", "check", "--data-dir", data_s],
        &[("BERTH_STORAGE_PATH", file.join("blobs").to_str().unwrap())],
    );
    assert!(!ok, "config check must fail too");
    assert!(err.contains("is not a directory"), "{err}");
    // Nothing was served, and no data directory was made for the failed starts.
    assert!(!data.join("berth.db").exists() || data.join("storage").exists());
}

async fn push(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    layers: &[Vec<u8>],
) -> Result<String, String> {
    let blob = |data: Vec<u8>| async move {
        let d = format!("sha256:{}", sha256_hex(&data));
        let r = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(data)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != 201 {
            return Err(format!("blob: {}", r.status()));
        }
        Ok::<String, String>(d)
    };
    let config = format!("{{\"repo\":\"{repo}\",\"tag\":\"{tag}\"}}").into_bytes();
    let cd = blob(config.clone()).await?;
    let mut ls = Vec::new();
    for l in layers {
        // Half the layers go up in chunks, to crash in the middle of those too.
        let d = if l.len() % 2 == 0 {
            blob(l.clone()).await?
        } else {
            let d = format!("sha256:{}", sha256_hex(l));
            let r = client
                .post(format!("{base}/v2/{repo}/blobs/uploads/"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let mut loc = r
                .headers()
                .get("location")
                .ok_or("no location")?
                .to_str()
                .unwrap()
                .to_string();
            for (i, c) in l.chunks(300_000).enumerate() {
                let start = i * 300_000;
                let r = client
                    .patch(format!("{base}{loc}"))
                    .header("content-range", format!("{start}-{}", start + c.len() - 1))
                    .body(c.to_vec())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() != 202 {
                    return Err(format!("patch: {}", r.status()));
                }
                loc = r.headers()["location"].to_str().unwrap().to_string();
            }
            let r = client
                .put(format!("{base}{loc}?digest={d}"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status() != 201 {
                return Err(format!("put: {}", r.status()));
            }
            d
        };
        ls.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
    }
    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": ls})
    .to_string();
    let r = client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("manifest: {}", r.status()));
    }
    Ok(format!("sha256:{}", sha256_hex(m.as_bytes())))
}

/// Reads every repository and tag and checks each manifest and blob against
/// its digest. Returns the number of tags checked.
async fn verify_everything(client: &reqwest::Client, base: &str) -> usize {
    let cat: Value = client
        .get(format!("{base}/v2/_catalog?n=10000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for repo in cat["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags: Value = client
            .get(format!("{base}/v2/{repo}/tags/list"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for tag in tags["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            let r = client
                .get(format!("{base}/v2/{repo}/manifests/{tag}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{repo}:{tag} is listed but not readable");
            let digest = r.headers()["docker-content-digest"].to_str().unwrap().to_string();
            let body = r.bytes().await.unwrap();
            assert_eq!(
                format!("sha256:{}", sha256_hex(&body)),
                digest,
                "{repo}:{tag} manifest intact"
            );
            let m: Value = serde_json::from_slice(&body).unwrap();
            let mut descs = vec![m["config"].clone()];
            descs.extend(m["layers"].as_array().unwrap().iter().cloned());
            for d in descs {
                let dg = d["digest"].as_str().unwrap();
                let r = client.get(format!("{base}/v2/{repo}/blobs/{dg}")).send().await.unwrap();
                assert_eq!(r.status(), 200, "{repo}:{tag} references {dg}, which is missing");
                let b = r.bytes().await.unwrap();
                assert_eq!(b.len() as u64, d["size"].as_u64().unwrap());
                assert_eq!(
                    format!("sha256:{}", sha256_hex(&b)),
                    dg,
                    "{repo}:{tag} blob {dg} intact"
                );
            }
            checked += 1;
        }
    }
    checked
}

/// Pushes from several clients at once, kills berth with SIGKILL at an
/// arbitrary moment, restarts it, and checks that everything visible is
/// intact and that every push berth acknowledged survived.
#[test]
fn kill_9_during_pushes_leaves_nothing_corrupt_or_half_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut acknowledged: Vec<(String, String, String)> = Vec::new();
    const SCOPES: [&str; 5] = [
        "repository:library/crash-w0:pull,push",
        "repository:library/crash-w1:pull,push",
        "repository:library/crash-w2:pull,push",
        "repository:library/crash-w3:pull,push",
        "registry:catalog:*",
    ];
    for round in 0..6 {
        let mut b = Berth::start(&data);
        let base = b.url();
        let client = rt.block_on(async { client_with_token(&admin_token(&base, &SCOPES).await) });
        // Everything acknowledged in earlier rounds is still there, exactly.
        rt.block_on(async {
            for (repo, tag, digest) in &acknowledged {
                let r = client
                    .head(format!("{base}/v2/{repo}/manifests/{tag}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "acknowledged push {repo}:{tag} lost after kill -9");
                assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), digest);
            }
            verify_everything(&client, &base).await;
        });
        let kill_after = Duration::from_millis(150 + rng.below(600));
        let seeds: Vec<u64> = (0..4).map(|_| rng.next()).collect();
        let acks = rt.block_on(async {
            let mut tasks = Vec::new();
            for (w, seed) in seeds.into_iter().enumerate() {
                let client = client.clone();
                let base = base.clone();
                tasks.push(tokio::spawn(async move {
                    let mut rng = Rng(seed | 1);
                    let mut acks = Vec::new();
                    for i in 0..1000 {
                        let layers: Vec<Vec<u8>> = (0..1 + rng.below(3))
                            .map(|_| {
                                let n = 1000 + rng.below(900_000) as usize;
                                rng.bytes(n)
                            })
                            .collect();
                        let repo = format!("library/crash-w{w}");
                        let tag = format!("r{round}-{i}");
                        match push(&client, &base, &repo, &tag, &layers).await {
                            Ok(d) => acks.push((repo, tag, d)),
                            Err(_) => break,
                        }
                    }
                    acks
                }));
            }
            tokio::time::sleep(kill_after).await;
            b.kill();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        });
        eprintln!(
            "round {round}: killed after {kill_after:?}, {} pushes acknowledged",
            acks.len()
        );
        acknowledged.extend(acks);
    }
    let b = Berth::start(&data);
    let client = rt.block_on(async { client_with_token(&admin_token(&b.url(), &SCOPES).await) });
    let checked = rt.block_on(verify_everything(&client, &b.url()));
    assert!(
        checked >= acknowledged.len(),
        "{checked} tags visible, {} acknowledged",
        acknowledged.len()
    );
    assert!(
        !acknowledged.is_empty(),
        "no push finished before any kill; the test proved nothing"
    );
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Berth::start(&tmp.path().join("data"));
    let base = b.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data: Vec<u8> = Rng(7).bytes(8 << 20);
    let digest = format!("sha256:{}", sha256_hex(&data));
    let token = rt.block_on(admin_token(&base, &["repository:library/slow:pull,push"]));
    let upload = rt.spawn({
        let token = token.clone();
        let base = base.clone();
        let data = data.clone();
        let digest = digest.clone();
        async move {
            // A slow client: 8 MiB in 64 KiB pieces over about 1.5 seconds.
            let chunks: Vec<Vec<u8>> = data.chunks(64 << 10).map(<[u8]>::to_vec).collect();
            let stream = futures_like(chunks, Duration::from_millis(12));
            client_with_token(&token)
                .post(format!("{base}/v2/library/slow/blobs/uploads/?digest={digest}"))
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = b.terminate();
    assert!(
        status.success(),
        "berth exits cleanly on SIGTERM: {status}\n{}",
        b.log_text()
    );
    let code = rt.block_on(upload).unwrap().expect("the upload in flight completes");
    assert_eq!(code, 201);
    assert!(b.log_text().contains("shutting down"));
    // After a restart the blob is there.
    let b2 = Berth::start(&tmp.path().join("data"));
    rt.block_on(async {
        let r = client_with_token(&token)
            .head(format!("{}/v2/library/slow/blobs/{digest}", b2.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
}

fn futures_like(
    chunks: Vec<Vec<u8>>,
    pause: Duration,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(chunks.into_iter(), move |mut it| async move {
        let c = it.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok(c), it))
    })
}

/// A 2 GiB blob goes up and comes down with the server's peak RSS far below
/// the blob's size: memory per request does not grow with the blob.
#[test]
fn a_2_gib_blob_streams_in_constant_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"));
    let base = b.url();
    const SIZE: u64 = 2 << 30;
    const PIECE: usize = 1 << 20;
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The same pseudo-random MiB repeated, hashed as it is generated.
    let piece = Rng(11).bytes(PIECE);
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    for _ in 0..SIZE / PIECE as u64 {
        sha2::Digest::update(&mut h, &piece);
    }
    let digest = format!("sha256:{}", hex::encode(sha2::Digest::finalize(h)));
    let before = b.peak_rss_kib();
    rt.block_on(async {
        let client = client_with_token(&admin_token(&base, &["repository:library/big:pull,push"]).await);
        let p = bytes::Bytes::from(piece.clone());
        let stream =
            futures_util::stream::iter((0..SIZE / PIECE as u64).map(move |_| Ok::<_, std::io::Error>(p.clone())));
        let r = client
            .post(format!("{base}/v2/library/big/blobs/uploads/?digest={digest}"))
            .header("content-length", SIZE)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let mut r = client
            .get(format!("{base}/v2/library/big/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let mut n = 0u64;
        while let Some(c) = r.chunk().await.unwrap() {
            n += c.len() as u64;
            sha2::Digest::update(&mut h, &c);
        }
        assert_eq!(n, SIZE);
        assert_eq!(format!("sha256:{}", hex::encode(sha2::Digest::finalize(h))), digest);
    });
    let peak = b.peak_rss_kib();
    eprintln!(
        "berth peak RSS: {} MiB before, {} MiB after moving 2 GiB up and down",
        before / 1024,
        peak / 1024
    );
    assert!(
        peak < 96 * 1024,
        "peak RSS {peak} KiB for a 2 GiB blob: memory is not constant per request"
    );
}

/// The server removes abandoned uploads by itself, after the configured age.
#[test]
fn abandoned_uploads_are_removed_by_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start_with(
        &tmp.path().join("data"),
        &[],
        &[
            ("BERTH_REGISTRY_UPLOAD_EXPIRY_SECS", "1"),
            ("BERTH_REGISTRY_UPLOAD_PURGE_INTERVAL_SECS", "1"),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client_with_token(&admin_token(&b.url(), &["repository:library/abandoned:pull,push"]).await);
        let r = c
            .post(format!("{}/v2/library/abandoned/blobs/uploads/", b.url()))
            .send()
            .await
            .unwrap();
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        c.patch(format!("{}{loc}", b.url()))
            .body(vec![1u8; 1000])
            .send()
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let s = c.get(format!("{}{loc}", b.url())).send().await.unwrap().status();
            if s == 404 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the upload was never purged");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let files = std::fs::read_dir(tmp.path().join("data/storage/uploads"))
        .unwrap()
        .count();
    assert_eq!(files, 0);
    assert!(b.log_text().contains("removed expired uploads"));
}
