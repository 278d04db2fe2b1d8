//! The portal in a real browser: Debian's Chromium driven by playwright-core
//! (tests/browser/portal.mjs) signs in, creates a project, finds an image
//! that skopeo pushed, copies its pull command, deletes it and signs out;
//! forged forms are refused and markup from users is shown as text.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// What the portal should show as the size of tag v1 of `layout`: manifest,
/// config and layers.
fn image_size(layout: &std::path::Path) -> i64 {
    let read = |p: std::path::PathBuf| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let index = read(layout.join("index.json"));
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .unwrap();
    let hex = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let manifest = read(layout.join("blobs/sha256").join(hex));
    let layers: i64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_i64().unwrap())
        .sum();
    m["size"].as_i64().unwrap() + manifest["config"]["size"].as_i64().unwrap() + layers
}

#[test]
fn the_portal_in_a_browser() {
    let node_ok = have("node", "--version") && have("chromium", "--version") && have("skopeo", "--version");
    if !node_ok {
        return;
    }
    if !std::path::Path::new(BROWSER_DIR)
        .join("node_modules/playwright-core")
        .exists()
    {
        assert!(
            !in_ci(),
            "playwright-core is not installed in {BROWSER_DIR} (the test command runs npm ci there)"
        );
        eprintln!("\n!!!!!!!! SKIPPED: run `npm ci` in {BROWSER_DIR} !!!!!!!!\n");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("image");
    make_image_sized(&layout, 3, 200_000);
    let expected = berth_http::portal::human_size(image_size(&layout));
    let b = Berth::start(&tmp.path().join("data"));
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("portal-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg("portal.mjs")
        .arg(b.url())
        .arg(ADMIN_PASSWORD)
        .arg(&layout)
        .arg(&expected)
        .arg(&shots)
        .current_dir(BROWSER_DIR)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{text}\nberth's log:\n{}",
        b.log_text().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(text.contains("every step passed"), "{text}");
    let _ = std::fs::remove_dir_all(&shots);
}
