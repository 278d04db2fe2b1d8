//! A real berth registry on 127.0.0.1:0 with a fresh SQLite database and
//! filesystem storage in a temporary directory, and helpers that read like
//! the registry's own words.

#![allow(dead_code)]

use std::sync::Arc;

use berth_core::{AllowAll, Limits, Registry};
use berth_http::AppState;
use berth_oci::Digest;
use berth_storage::FsStore;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub struct TestRegistry {
    pub base: String,
    pub client: Client,
    pub registry: Arc<Registry>,
    pub dir: tempfile::TempDir,
    _db: berth_db::testing::TestDb,
}

impl TestRegistry {
    pub async fn start() -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let t = berth_db::testing::sqlite().await;
        let store = FsStore::open(dir.path().join("storage")).unwrap();
        let registry = Arc::new(Registry::new(t.db.clone(), Arc::new(store), Limits::default()));
        let app = berth_http::router(AppState {
            registry: registry.clone(),
            auth: Arc::new(AllowAll),
            accounts: None,
            public_url: None,
            audit_pulls: true,
            https: false,
            vanity: None,
            replicator: None,
            proxy: None,
            webhooks: None,
        });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestRegistry {
            base: format!("http://{addr}"),
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            registry,
            dir,
            _db: t,
        }
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        self.client.request(method, url)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.unwrap()
    }

    pub async fn head(&self, path: &str) -> Response {
        self.req(Method::HEAD, path).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.req(Method::DELETE, path).send().await.unwrap()
    }

    /// Pushes a blob in one POST and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        d
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a config and layers, then an OCI image manifest under `tag`.
    /// Returns the manifest's digest and bytes.
    pub async fn push_image(&self, repo: &str, tag: &str, layers: &[&[u8]]) -> (Digest, Vec<u8>) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","n":"{repo}:{tag}"}}"#);
        let cd = self.push_blob(repo, config.as_bytes()).await;
        let mut ls = Vec::new();
        for l in layers {
            let d = self.push_blob(repo, l).await;
            ls.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": l.len()}));
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
            "layers": ls,
        });
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &bytes).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        (Digest::sha256_of(&bytes), bytes)
    }
}

/// Asserts status and OCI error code of a response; returns the error body.
pub async fn assert_error(r: Response, status: u16, code: &str) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "status for {code}: body {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    assert_eq!(v["errors"][0]["code"], code, "body {text}");
    assert!(v["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    v
}

pub fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}
