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

/// The berth.toml block of the ConfigMap: the indented lines after `berth.toml: |`.
fn configmap_toml() -> String {
    let manifest = std::fs::read_to_string(MANIFEST).unwrap();
    let start = manifest.find("berth.toml: |").expect("a berth.toml key") + "berth.toml: |".len();
    manifest[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect()
}

/// `berth config check` of `toml` with the Secret's values in the environment.
fn check(toml: &str, extra_env: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("berth.toml");
    std::fs::write(&cfg, toml).unwrap();
    let data = tmp.path().join("data");
    let mut env = vec![
        ("BERTH_DATABASE_URL", "postgres://berth:secret@postgres:5432/berth"),
        ("BERTH_REDIS_URL", "redis://:redis-secret@redis:6379/0"),
        ("BERTH_AUTH_TOKEN_KEY", "0123456789abcdef0123456789abcdef0123"),
        ("BERTH_AUTH_SECRET_KEY", "fedcba9876543210fedcba9876543210fedc"),
        ("BERTH_ADMIN_PASSWORD", "A-Strong-Passw0rd"),
    ];
    env.extend_from_slice(extra_env);
    let (ok, out, err) = berth(
        &[
            "config",
            "check",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &env,
    );
    assert!(ok, "{err}\n{toml}");
    assert!(
        out.contains("metadata: PostgreSQL at postgres://berth:***@postgres:5432/berth"),
        "{out}"
    );
    assert!(out.contains("sessions: Redis at redis://:***@redis:6379/0"), "{out}");
    for secret in [
        "secret@",
        "redis-secret",
        "A-Strong-Passw0rd",
        "0123456789abcdef",
        "fedcba9876543210",
        "s3-secret-value",
    ] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    out
}

#[test]
fn the_configmap_holds_a_configuration_berth_accepts() {
    let toml = configmap_toml();
    // The volume is mounted at /data; here a temporary directory stands in.
    let tmp = tempfile::tempdir().unwrap();
    let toml = toml.replace("/data/storage", tmp.path().join("storage").to_str().unwrap());
    let out = check(&toml, &[]);
    assert!(out.contains("blobs:    filesystem at "), "{out}");
}

#[test]
fn the_configmaps_s3_alternative_is_accepted_too() {
    let toml = configmap_toml();
    // Swap the [storage] section for the commented S3 one, as the comment says.
    let start = toml.find("[storage]\n").unwrap();
    let alt = toml.find("# [storage]").unwrap();
    let end = toml[alt..].find("\n\n").map(|i| alt + i).unwrap_or(toml.len());
    let s3: String = toml[alt..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let toml = format!("{}{}{}", &toml[..start], s3, &toml[end..]);
    let out = check(
        &toml,
        &[
            ("BERTH_STORAGE_S3_ACCESS_KEY", "AKID"),
            ("BERTH_STORAGE_S3_SECRET_KEY", "s3-secret-value"),
        ],
    );
    assert!(
        out.contains("blobs:    S3 bucket berth at https://rgw.example.com"),
        "{out}"
    );
}
