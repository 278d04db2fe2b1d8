//! `berth bench` runs every scenario against a live registry and reports
//! them in JSON, without errors. (How fast is for docs/benchmarks.md, not
//! for tests.)

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn bench_runs_every_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"));
    let nginx = have("nginx", "-v");
    let mut cmd = Command::new(BERTH);
    cmd.args(["bench", &b.url(), "-u", "admin", "-p", ADMIN_PASSWORD])
        .args(["--sizes", "1M,9M", "--concurrency", "2", "--seconds", "1"])
        .args(["--clients", "2", "--layers", "5", "--count", "150", "--json"])
        .args(["--pid", &b.pid().to_string()]);
    if nginx {
        cmd.arg("--nginx");
    }
    let out = run(&mut cmd);
    let report: Value = serde_json::from_str(&out).unwrap();
    let figures = report["figures"].as_array().unwrap();
    for scenario in ["push", "pull", "manifest", "image", "tags", "catalog"] {
        let mine: Vec<&Value> = figures.iter().filter(|f| f["scenario"] == scenario).collect();
        assert!(!mine.is_empty(), "no {scenario} figure in {out}");
        for f in mine {
            assert_eq!(f["errors"], 0, "{f}");
            assert!(f["rate"].as_f64().unwrap() > 0.0, "{f}");
        }
    }
    // 2 sizes × (monolithic, chunked); GET and HEAD.
    assert_eq!(figures.iter().filter(|f| f["scenario"] == "push").count(), 4);
    assert_eq!(figures.iter().filter(|f| f["scenario"] == "manifest").count(), 2);
    let tags = figures.iter().find(|f| f["scenario"] == "tags").unwrap();
    assert!(tags["detail"].as_str().unwrap().contains("150 tags"), "{tags}");
    assert!(tags["detail"].as_str().unwrap().contains("2 pages"), "{tags}");
    assert!(report["peak_rss_mib"].as_f64().unwrap() > 1.0);
    assert!(report["sha256_mb_s"].as_f64().unwrap() > 1.0);
    if nginx {
        let pull = figures.iter().find(|f| f["scenario"] == "pull").unwrap();
        assert!(pull["limit"].as_f64().unwrap() > 0.0, "{pull}");
    }
    // What it pushed is really there: the catalog has the repositories it made.
    let cat: Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let token = admin_token(&b.url(), &["registry:catalog:*"]).await;
        client_with_token(&token)
            .get(format!("{}/v2/_catalog?n=1000", b.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let n = cat["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.as_str().unwrap().starts_with("library/cat-"))
        .count();
    assert_eq!(n, 150);
}

/// The same tool against another registry: distribution, the reference
/// registry, which answers a single-request push with an upload session and
/// needs no login. Every scenario runs without an error.
#[test]
fn bench_runs_against_distribution() {
    if !have("docker-registry", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
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
            tmp.path().join("data").display()
        ),
    )
    .unwrap();
    let mut registry = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "distribution did not start on port {port}");
    let out = run(Command::new(BERTH)
        .args(["bench", &url, "--sizes", "1M", "--concurrency", "2", "--seconds", "1"])
        .args(["--clients", "2", "--layers", "5", "--count", "120", "--json"])
        .args(["--pid", &registry.id().to_string()]));
    let _ = registry.kill();
    let _ = registry.wait();
    let report: Value = serde_json::from_str(&out).unwrap();
    let figures = report["figures"].as_array().unwrap();
    for scenario in ["push", "pull", "manifest", "image", "tags", "catalog"] {
        let mine: Vec<&Value> = figures.iter().filter(|f| f["scenario"] == scenario).collect();
        assert!(!mine.is_empty(), "no {scenario} figure in {out}");
        for f in mine {
            assert_eq!(f["errors"], 0, "{f}");
            assert!(f["peak_rss_mib"].as_f64().unwrap() > 1.0, "{f}");
        }
    }
    let cat = figures.iter().find(|f| f["scenario"] == "catalog").unwrap();
    assert!(cat["detail"].as_str().unwrap().starts_with("120 repositories"), "{cat}");
}
