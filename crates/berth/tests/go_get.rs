//! The real Go toolchain fetches a module through a berth vanity path over
//! HTTPS, with a CA made by `berth tls init`: no -insecure, no GOINSECURE.
//! Runs in a private network namespace so it can use port 443 and made-up
//! host names without touching the machine.

mod common;

use std::process::Command;

use common::*;

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        if in_ci() {
            panic!("the go get test needs root for unshare in CI");
        }
        eprintln!("\n!!!!!!!! SKIPPED: the go get test needs root (unshare -mn) !!!!!!!!\n");
        return false;
    }
    have("go", "version") && have("git", "--version") && have("unshare", "--version") && have("curl", "--version")
}

fn go_get(mode: &str) {
    if !can_run() || (mode == "nginx" && (!have("nginx", "-v") || !have("skopeo", "--version"))) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/go_get.sh");
    let out = Command::new("unshare")
        .args(["-mn", "bash", script, BERTH])
        .arg(tmp.path())
        .arg(mode)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mkimage.py"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(tmp.path().join("berth.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "go get failed ({}):\n{stdout}\n{stderr}\nberth log:\n{log}",
        out.status
    );
    assert!(stdout.contains("hello from a vanity path sub-package"), "{stdout}");
    assert!(stdout.contains(&format!("go get through berth {mode}: ok")), "{stdout}");
    if mode == "nginx" {
        assert!(stdout.contains("registry through nginx: ok"), "{stdout}");
    }
}

#[test]
fn go_get_through_berth_vanity_over_https() {
    go_get("vanity");
}

#[test]
fn go_get_through_berth_serve_beside_the_registry() {
    go_get("serve");
}

/// nginx terminates TLS in front of berth (deploy/nginx.conf's shape):
/// go get, and skopeo push and pull with identical digests, through it.
#[test]
fn go_get_push_and_pull_through_nginx() {
    go_get("nginx");
}
