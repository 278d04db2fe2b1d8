//! HTTPS with a CA made by `berth tls init`: clients that verify
//! certificates push and pull with no insecure flags.

mod common;

use std::process::Command;

use common::*;

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "-w", "%{http_version}"])
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn tls_init_then_https_with_http2_and_verified_clients() {
    if !have("curl", "--version") || !have("skopeo", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let (ok, out, err) = berth(
        &[
            "tls",
            "init",
            "--dir",
            certs.to_str().unwrap(),
            "localhost",
            "127.0.0.1",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("/etc/docker/certs.d/localhost/ca.crt"), "{out}");
    let ca = certs.join("ca.crt");
    let b = Berth::start_with(
        &tmp.path().join("data"),
        &[
            "--tls-cert",
            certs.join("server.crt").to_str().unwrap(),
            "--tls-key",
            certs.join("server.key").to_str().unwrap(),
        ],
        &[("BERTH_TLS_REDIRECT_LISTEN", "127.0.0.1:0")],
    );
    let url = format!("https://{}/v2/", b.addr);
    // The plain-HTTP listener sends browsers to HTTPS, path and query kept.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = b.log_text();
        if log.contains("redirecting plain HTTP to HTTPS") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let line = log
        .lines()
        .find(|l| l.contains("redirecting plain HTTP to HTTPS"))
        .expect("redirect listener logged");
    let plain = line
        .split("listen=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (head, _) = curl(&[&format!("http://{plain}/v2/x/tags/list?n=1")]);
    let port = b.addr.rsplit(':').next().unwrap();
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    assert!(
        head.contains(&format!("location: https://127.0.0.1:{port}/v2/x/tags/list?n=1")),
        "{head}"
    );
    // A client that trusts the CA: HTTP/2 and a challenge whose realm is https.
    let (head, e) = curl(&["--cacert", ca.to_str().unwrap(), &url]);
    assert!(head.starts_with("HTTP/2 401"), "{head}{e}");
    assert!(
        head.contains(&format!("realm=\"https://{}/service/token\"", b.addr)),
        "{head}"
    );
    assert!(head.trim_end().ends_with('2'), "{head}");
    // One that does not trust it is refused by its own verification.
    let (_, e) = curl(&[&url]);
    assert!(e.contains("certificate"), "{e}");

    // skopeo verifies against the CA in a certs directory: no --tls-verify=false.
    let certs_d = tmp.path().join("certs.d");
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(&ca, certs_d.join("ca.crt")).unwrap();
    let src = tmp.path().join("src");
    let v1 = make_image(&src, 2);
    run(Command::new("skopeo").args([
        "copy",
        "--dest-cert-dir",
        certs_d.to_str().unwrap(),
        "--dest-creds",
        &admin_creds(),
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{}/library/tls:v1", b.addr),
    ]));
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--cert-dir",
        certs_d.to_str().unwrap(),
        &format!("docker://{}/library/tls:v1", b.addr),
    ]));
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), v1);
}

#[test]
fn certificates_are_reloaded_when_their_files_change() {
    if !have("curl", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let second = tmp.path().join("second");
    for d in [&first, &second] {
        let (ok, _, err) = berth(&["tls", "init", "--dir", d.to_str().unwrap(), "127.0.0.1"], &[]);
        assert!(ok, "{err}");
    }
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    for f in ["server.crt", "server.key"] {
        std::fs::copy(first.join(f), live.join(f)).unwrap();
    }
    let b = Berth::start_with(
        &tmp.path().join("data"),
        &[
            "--tls-cert",
            live.join("server.crt").to_str().unwrap(),
            "--tls-key",
            live.join("server.key").to_str().unwrap(),
        ],
        &[],
    );
    let url = format!("https://{}/healthz", b.addr);
    let trusted_by = |ca: &std::path::Path| {
        curl(&["--cacert", ca.to_str().unwrap(), &url])
            .0
            .starts_with("HTTP/2 200")
    };
    assert!(trusted_by(&first.join("ca.crt")));
    assert!(!trusted_by(&second.join("ca.crt")));
    // A broken pair is refused and the old certificate keeps serving.
    std::fs::write(live.join("server.crt"), "not a certificate").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(7));
    assert!(
        trusted_by(&first.join("ca.crt")),
        "the last good certificate keeps serving"
    );
    for f in ["server.key", "server.crt"] {
        std::fs::copy(second.join(f), live.join(f)).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !trusted_by(&second.join("ca.crt")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not picked up:\n{}",
            b.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(b.log_text().contains("TLS certificate reloaded"));
    assert!(b.log_text().contains("new TLS certificate refused"));
}
