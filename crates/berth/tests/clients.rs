//! Real OCI clients against the built binary: skopeo, podman, oras.
//! Images are made locally; nothing leaves the machine.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// skopeo with the credentials that [`skopeo_login`] stored in `auth`.
fn skopeo(auth: &std::path::Path, args: &[&str]) -> String {
    run(Command::new("skopeo").args(args).env("REGISTRY_AUTH_FILE", auth))
}

/// `skopeo login` into a private auth file, which later commands use through
/// REGISTRY_AUTH_FILE. A wrong password is refused first.
fn skopeo_login(reg: &str, authfile: &std::path::Path) {
    let bad = Command::new("skopeo")
        .args([
            "login",
            "--tls-verify=false",
            "-u",
            "admin",
            "-p",
            "wrong-Passw0rd",
            reg,
        ])
        .env("REGISTRY_AUTH_FILE", authfile)
        .output()
        .unwrap();
    assert!(!bad.status.success(), "a wrong password must not log in");
    run(Command::new("skopeo")
        .args(["login", "--tls-verify=false", "-u", "admin", "-p", ADMIN_PASSWORD, reg])
        .env("REGISTRY_AUTH_FILE", authfile));
}

fn index_digest(layout: &std::path::Path, tag: &str) -> String {
    let index: Value = serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("tag {tag} in {}", layout.display()))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn skopeo_copies_in_and_out_with_identical_digests() {
    if !have("skopeo", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let v1 = make_image(&src, 3);
    let b = Berth::start(&tmp.path().join("data"));
    let reg = b.addr.clone();
    let auth = tmp.path().join("auth.json");
    skopeo_login(&reg, &auth);

    // One image, and a multi-platform index with --all.
    let src_ref = format!("oci:{}:v1", src.display());
    skopeo(
        &auth,
        &[
            "copy",
            "--dest-tls-verify=false",
            &src_ref,
            &format!("docker://{reg}/library/app:v1"),
        ],
    );
    let multi_ref = format!("oci:{}:multi", src.display());
    skopeo(
        &auth,
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &multi_ref,
            &format!("docker://{reg}/library/tools/multi:latest"),
        ],
    );

    let raw = skopeo(
        &auth,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reg}/library/app:v1"),
        ],
    );
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw.as_bytes())),
        v1,
        "manifest stored byte-exact"
    );

    // And out again, into fresh layouts.
    let out = tmp.path().join("out");
    skopeo(
        &auth,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{reg}/library/app:v1"),
            &format!("oci:{}:v1", out.display()),
        ],
    );
    assert_eq!(index_digest(&out, "v1"), v1);
    let out_multi = tmp.path().join("out-multi");
    skopeo(
        &auth,
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{reg}/library/tools/multi:latest"),
            &format!("oci:{}:multi", out_multi.display()),
        ],
    );
    assert_eq!(index_digest(&out_multi, "multi"), index_digest(&src, "multi"));
    // Every blob that came back is byte-identical to the one that went in.
    for entry in std::fs::read_dir(out.join("blobs/sha256")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(sha256_hex(&std::fs::read(&p).unwrap()), name);
        assert!(
            src.join("blobs/sha256").join(&name).exists(),
            "blob {name} came from the source"
        );
    }

    let tags: Value = serde_json::from_str(&skopeo(
        &auth,
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{reg}/library/app"),
        ],
    ))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));
    // Delete through skopeo, then the tag is gone.
    skopeo(
        &auth,
        &[
            "delete",
            "--tls-verify=false",
            &format!("docker://{reg}/library/app:v1"),
        ],
    );
    let st = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reg}/library/app:v1"),
        ])
        .output()
        .unwrap();
    assert!(!st.status.success());
}

#[test]
fn podman_pushes_and_pulls() {
    if !have("podman", "--version") {
        return;
    }
    // podman names an image pulled from a layout after its path, which must be lowercase.
    let unique = format!(
        "bp{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let tmp = tempfile::Builder::new()
        .prefix(&unique)
        .rand_bytes(0)
        .tempdir()
        .unwrap();
    let src = tmp.path().join("src");
    make_image(&src, 2);
    let b = Berth::start(&tmp.path().join("data"));
    let reg = b.addr.clone();
    let root = tmp.path().join("podman-root");
    // The runroot path must stay under 50 characters.
    let runroot = tmp.path().join("run");
    let authfile = tmp.path().join("auth.json");
    std::fs::write(&authfile, "{}").unwrap();
    let podman = || {
        let mut c = Command::new("podman");
        c.env("REGISTRY_AUTH_FILE", &authfile);
        c.arg("--root").arg(&root).arg("--runroot").arg(&runroot).args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
        c
    };
    let image = run(podman().args(["pull", "-q", &format!("oci:{}:v1", src.display())]))
        .trim()
        .to_string();
    let digestfile = tmp.path().join("digest");
    let target = format!("{reg}/library/podman-test:v1");
    // Anonymous pushes are refused; after `podman login` they go through.
    let refused = podman()
        .args(["push", "--tls-verify=false", &image, &format!("docker://{target}")])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "an anonymous push must be refused");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("denied") || why.contains("unauthorized"), "{why}");

    run(podman().args(["login", "--tls-verify=false", "-u", "admin", "-p", ADMIN_PASSWORD, &reg]));
    run(podman()
        .args(["push", "--tls-verify=false", "--digestfile"])
        .arg(&digestfile)
        .arg(&image)
        .arg(format!("docker://{target}")));
    let pushed = std::fs::read_to_string(&digestfile).unwrap().trim().to_string();
    assert!(pushed.starts_with("sha256:"));
    run(podman().args(["rmi", "-a", "-f"]));
    run(podman().args(["pull", "-q", "--tls-verify=false", &target]));
    let pulled = run(podman().args(["image", "inspect", "--format", "{{.Digest}}", &target]));
    assert_eq!(pulled.trim(), pushed, "podman pulls what it pushed");
}

const ORAS_SCRIPT: &str = r#"
import json, os, sys
import oras.client, oras.oci
reg, subject_digest, subject_size, workdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
os.chdir(workdir)
with open("signature.txt", "w") as f:
    f.write("signed by berth tests\n")
c = oras.client.OrasClient(hostname=reg, insecure=True)
c.login(username="admin", password=sys.argv[5])
subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json", digest=subject_digest, size=subject_size)
r = c.push(target=f"{reg}/library/app:sig", files=["signature.txt:application/vnd.example.signature"],
           subject=subject, manifest_annotations={"org.example.kind": "signature"}, do_chunked=True, chunk_size=7, quiet=True)
print(r.headers.get("Docker-Content-Digest"))
os.makedirs("pulled", exist_ok=True)
files = c.pull(target=f"{reg}/library/app:sig", outdir="pulled")
print(json.dumps(files), file=sys.stderr)
"#;

#[test]
fn oras_pushes_an_artifact_with_a_subject_found_through_referrers() {
    if !have("skopeo", "--version") || !have_oras() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let v1 = make_image(&src, 1);
    let b = Berth::start(&tmp.path().join("data"));
    let reg = b.addr.clone();
    let auth = tmp.path().join("auth.json");
    skopeo_login(&reg, &auth);
    skopeo(
        &auth,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{reg}/library/app:v1"),
        ],
    );
    let size = std::fs::metadata(src.join("blobs/sha256").join(v1.trim_start_matches("sha256:")))
        .unwrap()
        .len();

    let work = tmp.path().join("oras");
    std::fs::create_dir_all(&work).unwrap();
    let out = run(Command::new("python3")
        .args(["-c", ORAS_SCRIPT, &reg, &v1, &size.to_string()])
        .arg(&work)
        .arg(ADMIN_PASSWORD));
    let artifact = out.trim().to_string();
    assert!(artifact.starts_with("sha256:"), "oras printed {out:?}");
    assert_eq!(
        std::fs::read_to_string(work.join("pulled/signature.txt")).unwrap(),
        "signed by berth tests\n"
    );

    // Discovery through the referrers API, plain and filtered.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client_with_token(&admin_token(&b.url(), &["repository:library/app:pull"]).await);
        let r = c
            .get(format!("{}/v2/library/app/referrers/{v1}", b.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let ms = v["manifests"].as_array().unwrap();
        assert_eq!(ms.len(), 1, "{v}");
        assert_eq!(ms[0]["digest"], artifact);
        assert_eq!(ms[0]["annotations"]["org.example.kind"], "signature");
        let r = c
            .get(format!(
                "{}/v2/library/app/referrers/{v1}?artifactType=application/vnd.unknown",
                b.url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["manifests"], serde_json::json!([]));
    });
}

#[test]
fn buildah_builds_from_scratch_and_pushes() {
    if !have("buildah", "--version") || !have("skopeo", "--version") {
        return;
    }
    let unique = format!(
        "bb{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let tmp = tempfile::Builder::new()
        .prefix(&unique)
        .rand_bytes(0)
        .tempdir()
        .unwrap();
    let b = Berth::start(&tmp.path().join("data"));
    let reg = b.addr.clone();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from buildah\n").unwrap();
    let tar = tmp.path().join("ctx.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&ctx).arg("."));
    let root = tmp.path().join("root");
    let runroot = tmp.path().join("run");
    let buildah = || {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "vfs"]);
        c
    };
    let container = run(buildah().args(["from", "scratch"])).trim().to_string();
    run(buildah().args(["add", &container]).arg(&tar).arg("/"));
    run(buildah().args(["config", "--cmd", "/hello.txt", &container]));
    run(buildah().args(["commit", "-q", &container, "localhost/built:v1"]));
    let digestfile = tmp.path().join("digest");
    run(buildah()
        .args(["push", "--tls-verify=false", "--creds", &admin_creds(), "--digestfile"])
        .arg(&digestfile)
        .args(["localhost/built:v1", &format!("docker://{reg}/library/built:v1")]));
    let pushed = std::fs::read_to_string(&digestfile).unwrap().trim().to_string();
    // library is public: anyone may pull, without logging in.
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reg}/library/built:v1"),
    ]));
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), pushed);
}
