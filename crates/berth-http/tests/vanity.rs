//! Vanity import paths as `go get` and browsers see them.

use std::time::Duration;

use berth_http::vanity::{router, Vanity};

async fn start(file: &std::path::Path, host: Option<&str>) -> (String, std::sync::Arc<Vanity>) {
    let v = Vanity::load(file, host.map(str::to_string), "https://pkg.go.dev".into()).unwrap();
    v.watch(Duration::from_millis(100));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(v.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, v)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn go_get_gets_meta_tags_for_a_path_and_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vanity.yaml");
    // The source documents' flat form, unchanged.
    std::fs::write(&f, "/gowechat:\n        repo: https://github.com/bigwhite/gowechat\n\n/x/experiments:\n        repo: https://github.com/bigwhite/experiments\n").unwrap();
    let (base, _) = start(&f, Some("tonybai.com")).await;
    let c = client();
    for path in ["/gowechat", "/gowechat/mp", "/gowechat/mp/deep/er"] {
        let r = c.get(format!("{base}{path}?go-get=1")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "public, max-age=86400");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(
                r#"<meta name="go-import" content="tonybai.com/gowechat git https://github.com/bigwhite/gowechat">"#
            ),
            "{body}"
        );
        assert!(body.contains(r#"<meta name="go-source" content="tonybai.com/gowechat https://github.com/bigwhite/gowechat https://github.com/bigwhite/gowechat/tree/master{/dir} https://github.com/bigwhite/gowechat/blob/master{/dir}/{file}#L{line}">"#), "{body}");
    }
    let body = c
        .get(format!("{base}/x/experiments/sub?go-get=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains(r#"content="tonybai.com/x/experiments git https://github.com/bigwhite/experiments""#),
        "{body}"
    );
    // Whole segments only; unknown paths are 404 with no tags.
    for path in ["/gowechatter", "/x", "/x/experimentsX", "/nothing"] {
        let r = c.get(format!("{base}{path}?go-get=1")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(!r.text().await.unwrap().contains("go-import"));
    }
    // HEAD works.
    let r = c.head(format!("{base}/gowechat?go-get=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Browsers go to the documentation of the exact sub-path.
    let r = c.get(format!("{base}/gowechat/mp")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://pkg.go.dev/tonybai.com/gowechat/mp");
    // The index lists the paths.
    let body = c.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    assert!(
        body.contains("tonybai.com/gowechat") && body.contains("tonybai.com/x/experiments"),
        "{body}"
    );
}

#[tokio::test]
async fn structured_form_mod_vcs_subdirectory_and_escaping() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vanity.yaml");
    std::fs::write(&f, "host: example.test\ncache_max_age: 300\npaths:\n  /m:\n    repo: https://proxy.example.test\n    vcs: mod\n  /s:\n    repo: https://git.example.test/mono\n    vcs: git\n    subdirectory: tools/s\n  /x:\n    repo: \"https://git.example.test/<x>\"\n    vcs: git\n").unwrap();
    let (base, _) = start(&f, None).await;
    let c = client();
    let r = c.get(format!("{base}/m/pkg?go-get=1")).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let body = r.text().await.unwrap();
    assert!(
        body.contains(r#"content="example.test/m mod https://proxy.example.test""#),
        "{body}"
    );
    assert!(!body.contains("go-source"), "no go-source for an unknown host");
    let body = c
        .get(format!("{base}/s?go-get=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains(r#"content="example.test/s git https://git.example.test/mono tools/s""#),
        "{body}"
    );
    let body = c
        .get(format!("{base}/x?go-get=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("https://git.example.test/&lt;x&gt;") && !body.contains("<x>"),
        "{body}"
    );
    let index = c.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
    assert!(!index.contains("<x>"), "{index}");
}

#[tokio::test]
async fn the_file_reloads_and_a_bad_one_keeps_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vanity.yaml");
    std::fs::write(&f, "/a:\n  repo: https://github.com/o/a\n").unwrap();
    let (base, v) = start(&f, Some("example.test")).await;
    let c = client();
    let status = |p: &'static str| {
        let c = c.clone();
        let base = base.clone();
        async move {
            c.get(format!("{base}{p}?go-get=1"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/b").await, 404);
    // mtime granularity: make sure the new write is seen as a change.
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(
        &f,
        "/a:\n  repo: https://github.com/o/a\n/b:\n  repo: https://github.com/o/b\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while status("/b").await != 200 {
        assert!(std::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(
        &f,
        "/a:\n  repo: https://github.com/o/a\n/c:\n  repo: https://nowhere.test/c\n",
    )
    .unwrap();
    let err = v.reload().unwrap_err();
    assert!(err.contains("line 3") && err.contains("vcs"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status("/b").await, 200, "the last good file keeps serving");
}
