//! The Kubernetes manifests validate against Kubernetes' schemas, and the
//! configuration they carry is one berth accepts.

mod common;

use std::process::Command;

use common::*;

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/kubernetes/berth.yaml");

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    if !have("kubernetes-validate", "--version") {
        return;
    }
    let out = Command::new("kubernetes-validate")
        .args(["--strict", MANIFEST])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for kind in [
        "configmap/berth",
        "deployment/berth",
        "service/berth",
        "poddisruptionbudget/berth",
        "persistentvolumeclaim/berth-storage",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{text}"
        );
    }
}

#[test]
fn the_configmap_holds_a_configuration_berth_accepts() {
    let manifest = std::fs::read_to_string(MANIFEST).unwrap();
    // The berth.toml block: the indented lines after `berth.toml: |`.
    let start = manifest.find("berth.toml: |").expect("a berth.toml key") + "berth.toml: |".len();
    let toml: String = manifest[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("berth.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let data = tmp.path().join("data");
    let (ok, out, err) = berth(
        &[
            "config",
            "check",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[
            ("BERTH_DATABASE_URL", "postgres://berth:secret@postgres:5432/berth"),
            ("BERTH_AUTH_TOKEN_KEY", "0123456789abcdef0123456789abcdef0123"),
            ("BERTH_ADMIN_PASSWORD", "A-Strong-Passw0rd"),
            ("BERTH_STORAGE_PATH", data.join("storage").to_str().unwrap()),
        ],
    );
    assert!(ok, "{err}\n{toml}");
    assert!(
        out.contains("metadata: PostgreSQL at postgres://berth:***@postgres:5432/berth"),
        "{out}"
    );
    assert!(
        !out.contains("secret@") && !out.contains("A-Strong-Passw0rd") && !out.contains("0123456789abcdef"),
        "{out}"
    );
}
