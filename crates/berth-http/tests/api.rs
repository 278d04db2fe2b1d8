//! Every endpoint of the OCI distribution API, and its error paths, against
//! a real server in-process.

mod common;

use berth_oci::{Algorithm, Digest};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn base_endpoint_and_unknown_paths() {
    let t = TestRegistry::start().await;
    for path in ["/v2/", "/v2"] {
        let r = t.get(path).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0");
        assert_eq!(r.text().await.unwrap(), "{}");
    }
    assert_eq!(t.head("/v2/").await.status(), 200);
    assert_error(t.get("/v2/a/b/c").await, 404, "NAME_UNKNOWN").await;
    assert_eq!(t.get("/nothing").await.status(), 404);
    assert_eq!(t.get("/healthz").await.status(), 200);
    assert_eq!(t.get("/readyz").await.text().await.unwrap(), "ready\n");

    assert_error(t.get("/v2/UPPER/tags/list").await, 400, "NAME_INVALID").await;
    assert_error(
        t.req(Method::POST, "/v2/_catalog").send().await.unwrap(),
        405,
        "UNSUPPORTED",
    )
    .await;
}

#[tokio::test]
async fn monolithic_upload_and_blob_reads() {
    let t = TestRegistry::start().await;
    let data = b"hello, berth".to_vec();
    let d = Digest::sha256_of(&data);
    let r = t
        .req(Method::POST, &format!("/v2/lib/x/blobs/uploads/?digest={d}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/lib/x/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());

    let r = t.head(&format!("/v2/lib/x/blobs/{d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    let r = t.get(&format!("/v2/lib/x/blobs/{d}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(r.bytes().await.unwrap(), data);

    // Blobs are per repository.
    assert_error(t.get(&format!("/v2/lib/other/blobs/{d}")).await, 404, "BLOB_UNKNOWN").await;
    let r = t.head(&format!("/v2/lib/x/blobs/{}", Digest::sha256_of(b"nope"))).await;
    assert_eq!(r.status(), 404);
    assert_error(t.get("/v2/lib/x/blobs/sha256:1234").await, 400, "DIGEST_INVALID").await;
    assert_error(t.get("/v2/lib/x/blobs/md5:1234").await, 400, "DIGEST_INVALID").await;

    // A body that does not match its digest is refused and stored nowhere.
    let wrong = Digest::sha256_of(b"something else");
    let r = t
        .req(Method::POST, &format!("/v2/lib/x/blobs/uploads/?digest={wrong}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(v["errors"][0]["detail"]["actual"], d.to_string());
    assert_eq!(t.head(&format!("/v2/lib/x/blobs/{wrong}")).await.status(), 404);
}

#[tokio::test]
async fn range_requests() {
    let t = TestRegistry::start().await;
    let data: Vec<u8> = (0..=255u8).collect();
    let d = t.push_blob("r", &data).await;
    let url = format!("/v2/r/blobs/{d}");
    let r = t
        .req(Method::GET, &url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 10-19/256");
    assert_eq!(r.bytes().await.unwrap(), data[10..20]);
    let r = t
        .req(Method::GET, &url)
        .header("range", "bytes=-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), data[250..]);
    let r = t
        .req(Method::GET, &url)
        .header("range", "bytes=200-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), data[200..]);
    let r = t
        .req(Method::GET, &url)
        .header("range", "bytes=256-300")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), "bytes */256");
    let r = t
        .req(Method::HEAD, &url)
        .header("range", "bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-length"), "1");
}

#[tokio::test]
async fn post_then_put_and_chunked_uploads() {
    let t = TestRegistry::start().await;
    // POST then PUT with the whole body.
    let r = t.req(Method::POST, "/v2/a/b/c/blobs/uploads/").send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location").to_string();
    assert_eq!(header(&r, "range"), "0-0");
    let id = header(&r, "docker-upload-uuid").to_string();
    assert!(loc.ends_with(&id));
    let data = b"post then put".to_vec();
    let d = Digest::sha256_of(&data);
    let r = t
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/a/b/c/blobs/{d}"));
    assert_eq!(
        t.get(&format!("/v2/a/b/c/blobs/{d}")).await.bytes().await.unwrap(),
        data
    );

    // Chunked: three PATCHes with Content-Range, then PUT without a body.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256_of(&big);
    let r = t.req(Method::POST, "/v2/chunky/blobs/uploads/").send().await.unwrap();
    let mut loc = header(&r, "location").to_string();
    for (i, chunk) in big.chunks(1_000_000).enumerate() {
        let start = i * 1_000_000;
        let end = start + chunk.len() - 1;
        let r = t
            .req(Method::PATCH, &loc)
            .header("content-range", format!("{start}-{end}"))
            .header("content-type", "application/octet-stream")
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "chunk {i}");
        assert_eq!(header(&r, "range"), format!("0-{end}"));
        loc = header(&r, "location").to_string();
    }
    // Out of order: 416, and the response says where the upload stands.
    let r = t
        .req(Method::PATCH, &loc)
        .header("content-range", "5-9")
        .body(b"xxxxx".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "range"), "0-2999999");
    let r = t.get(&loc).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range"), "0-2999999");
    let r = t.req(Method::PUT, &format!("{loc}?digest={d}")).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = t.get(&format!("/v2/chunky/blobs/{d}")).await.bytes().await.unwrap();
    assert_eq!(Digest::sha256_of(&got), d);
    // A finished upload is gone.
    assert_error(t.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn streamed_patch_and_final_chunk_in_put() {
    let t = TestRegistry::start().await;
    let part1 = vec![1u8; 100_000];
    let part2 = vec![2u8; 50_000];
    let mut all = part1.clone();
    all.extend_from_slice(&part2);
    let d = Digest::sha256_of(&all);
    let loc = header(
        &t.req(Method::POST, "/v2/s/blobs/uploads/").send().await.unwrap(),
        "location",
    )
    .to_string();
    // A streamed PATCH: no Content-Range, no Content-Length (chunked encoding).
    let stream = futures_util::stream::iter(
        part1
            .chunks(7_000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = t
        .req(Method::PATCH, &loc)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), "0-99999");
    let loc = header(&r, "location").to_string();
    // The last chunk travels with the PUT.
    let r = t
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", "100000-149999")
        .body(part2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(t.get(&format!("/v2/s/blobs/{d}")).await.bytes().await.unwrap(), all);
}

#[tokio::test]
async fn upload_errors_and_cancel() {
    let t = TestRegistry::start().await;
    let loc = header(
        &t.req(Method::POST, "/v2/u/blobs/uploads/").send().await.unwrap(),
        "location",
    )
    .to_string();
    // PUT without a digest.
    assert_error(t.req(Method::PUT, &loc).send().await.unwrap(), 400, "DIGEST_INVALID").await;
    // The same upload through another repository is unknown.
    let other = loc.replace("/v2/u/", "/v2/v/");
    assert_error(t.get(&other).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(t.get("/v2/u/blobs/uploads/not-an-id").await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(
        t.get(&format!("/v2/u/blobs/uploads/{}", "0".repeat(32))).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    // A Content-Range that disagrees with Content-Length.
    let r = t
        .req(Method::PATCH, &loc)
        .header("content-range", "0-9")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "BLOB_UPLOAD_INVALID").await;
    // A wrong digest on PUT keeps the upload, so the right digest can follow.
    t.req(Method::PATCH, &loc).body(b"abc".to_vec()).send().await.unwrap();
    let r = t
        .req(Method::PUT, &format!("{loc}?digest={}", Digest::sha256_of(b"xyz")))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(header(&t.get(&loc).await, "range"), "0-2");
    // Cancel.
    assert_eq!(t.delete(&loc).await.status(), 204);
    assert_error(t.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(t.delete(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(
        t.req(Method::PATCH, &loc).body(b"x".to_vec()).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn sha512_blobs_and_manifests() {
    let t = TestRegistry::start().await;
    let data = b"sha512 content".to_vec();
    let d = Digest::of(Algorithm::Sha512, &data);
    let r = t
        .req(Method::POST, &format!("/v2/five/blobs/uploads/?digest={d}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(t.get(&format!("/v2/five/blobs/{d}")).await.bytes().await.unwrap(), data);
    let (_, m) = t.push_image("five", "t", &[b"layer"]).await;
    let d512 = Digest::of(Algorithm::Sha512, &m);
    let r = t.put_manifest("five", &d512.to_string(), OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), d512.to_string());
    assert_eq!(
        t.get(&format!("/v2/five/manifests/{d512}"))
            .await
            .bytes()
            .await
            .unwrap(),
        m
    );
}

#[tokio::test]
async fn cross_repository_mount() {
    let t = TestRegistry::start().await;
    let d = t.push_blob("src/repo", b"shared layer").await;
    let r = t
        .req(
            Method::POST,
            &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/dst/repo/blobs/{d}"));
    assert_eq!(
        t.get(&format!("/v2/dst/repo/blobs/{d}")).await.bytes().await.unwrap(),
        b"shared layer".as_slice()
    );
    // Not in `from`: a new upload session instead.
    let missing = Digest::sha256_of(b"missing");
    let r = t
        .req(
            Method::POST,
            &format!("/v2/dst/repo/blobs/uploads/?mount={missing}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(header(&r, "location").starts_with("/v2/dst/repo/blobs/uploads/"));
    let r = t
        .req(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=Bad..Name"),
        )
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "NAME_INVALID").await;
}

#[tokio::test]
async fn manifests_by_tag_and_digest() {
    let t = TestRegistry::start().await;
    let (d, bytes) = t
        .push_image("library/busybox", "latest", &[b"layer one", b"layer two"])
        .await;
    for reference in ["latest".to_string(), d.to_string()] {
        let r = t.get(&format!("/v2/library/busybox/manifests/{reference}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), d.to_string());
        assert_eq!(header(&r, "content-length"), bytes.len().to_string());
        assert_eq!(r.bytes().await.unwrap(), bytes, "stored byte-exact");
        let r = t.head(&format!("/v2/library/busybox/manifests/{reference}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-length"), bytes.len().to_string());
        assert_eq!(header(&r, "docker-content-digest"), d.to_string());
    }
    // PUT by digest, and a digest that does not match.
    let r = t
        .put_manifest("library/busybox", &d.to_string(), OCI_MANIFEST, &bytes)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/library/busybox/manifests/{d}"));
    let wrong = Digest::sha256_of(b"other");
    assert_error(
        t.put_manifest("library/busybox", &wrong.to_string(), OCI_MANIFEST, &bytes)
            .await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    // Unknown references.
    assert_error(
        t.get("/v2/library/busybox/manifests/nope").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        t.get(&format!("/v2/library/busybox/manifests/{wrong}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(t.get("/v2/library/nothing/manifests/latest").await, 404, "NAME_UNKNOWN").await;
    assert_eq!(t.head("/v2/library/busybox/manifests/nope").await.status(), 404);
    assert_error(
        t.get("/v2/library/busybox/manifests/bad:ref").await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // Many path components.
    let (d2, _) = t.push_image("a/b/c/d/e", "v1", &[b"x"]).await;
    let r = t.get("/v2/a/b/c/d/e/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest"), d2.to_string());
}

#[tokio::test]
async fn manifest_validation() {
    let t = TestRegistry::start().await;
    let cfg = t.push_blob("v", b"{}").await;
    let missing = Digest::sha256_of(b"never pushed");
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": missing.to_string(), "size": 12}]});
    let v = assert_error(
        t.put_manifest("v", "t", OCI_MANIFEST, m.to_string().as_bytes()).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(v["errors"][0]["detail"]["digest"], missing.to_string());
    // Wrong size in a descriptor.
    let bad_size = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 3}, "layers": []});
    assert_error(
        t.put_manifest("v", "t", OCI_MANIFEST, bad_size.to_string().as_bytes())
            .await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    assert_error(
        t.put_manifest("v", "t", OCI_MANIFEST, b"not json").await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // Content-Type disagreeing with mediaType.
    let ok = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 2}, "layers": []});
    assert_error(
        t.put_manifest("v", "t", OCI_INDEX, ok.to_string().as_bytes()).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    assert_error(
        t.put_manifest(
            "v",
            "t",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            b"{}",
        )
        .await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    // Nothing above was stored.
    assert_error(t.get("/v2/v/manifests/t").await, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(
        t.put_manifest("v", "t", OCI_MANIFEST, ok.to_string().as_bytes())
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn manifest_size_limit() {
    let t = TestRegistry::start().await;
    let cfg = t.push_blob("big", b"{}").await;
    let build = |target: usize| {
        let base = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 2},
            "layers": [], "annotations": {"pad": ""}});
        let overhead = base.to_string().len();
        let mut m = base;
        m["annotations"]["pad"] = Value::String("x".repeat(target - overhead));
        let s = m.to_string();
        assert_eq!(s.len(), target);
        s
    };
    let exactly_4mib = build(4 << 20);
    assert_eq!(
        t.put_manifest("big", "max", OCI_MANIFEST, exactly_4mib.as_bytes())
            .await
            .status(),
        201
    );
    assert_eq!(
        t.get("/v2/big/manifests/max").await.bytes().await.unwrap().len(),
        4 << 20
    );
    let over = build((4 << 20) + 1);
    assert_error(
        t.put_manifest("big", "over", OCI_MANIFEST, over.as_bytes()).await,
        413,
        "SIZE_INVALID",
    )
    .await;
}

#[tokio::test]
async fn accept_negotiation() {
    let t = TestRegistry::start().await;
    let cfg = t.push_blob("n", b"{}").await;
    let m = json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg.to_string(), "size": 2},
        "layers": []});
    assert_eq!(
        t.put_manifest("n", "d", DOCKER_MANIFEST, m.to_string().as_bytes())
            .await
            .status(),
        201
    );
    let get = |accept: &'static str| t.req(Method::GET, "/v2/n/manifests/d").header("accept", accept).send();
    let r = get(OCI_MANIFEST).await.unwrap();
    assert_error(r, 404, "MANIFEST_UNKNOWN").await;
    let r = get("application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), DOCKER_MANIFEST);
    assert_eq!(get("*/*").await.unwrap().status(), 200);
    assert_eq!(t.get("/v2/n/manifests/d").await.status(), 200, "no Accept: anything");
}

#[tokio::test]
async fn indexes_need_their_children() {
    let t = TestRegistry::start().await;
    let (child, child_bytes) = t.push_image("multi", "amd64", &[b"amd64 layer"]).await;
    let absent = Digest::sha256_of(b"arm64 manifest");
    let index =
        |children: Vec<Value>| json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).to_string();
    let amd = json!({"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": child_bytes.len(), "platform": {"architecture": "amd64", "os": "linux"}});
    let arm = json!({"mediaType": OCI_MANIFEST, "digest": absent.to_string(), "size": 10});
    let r = t
        .put_manifest("multi", "latest", OCI_INDEX, index(vec![amd.clone(), arm]).as_bytes())
        .await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    let body = index(vec![amd]);
    let r = t.put_manifest("multi", "latest", OCI_INDEX, body.as_bytes()).await;
    assert_eq!(r.status(), 201);
    let r = t.get("/v2/multi/manifests/latest").await;
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(r.text().await.unwrap(), body);
    // A child cannot be deleted while an index lists it.
    assert_error(t.delete(&format!("/v2/multi/manifests/{child}")).await, 409, "DENIED").await;
    let index_digest = Digest::sha256_of(body.as_bytes());
    assert_eq!(
        t.delete(&format!("/v2/multi/manifests/{index_digest}")).await.status(),
        202
    );
    assert_eq!(t.delete(&format!("/v2/multi/manifests/{child}")).await.status(), 202);
}

#[tokio::test]
async fn deletes() {
    let t = TestRegistry::start().await;
    let (d, _) = t.push_image("del", "one", &[b"l1"]).await;
    let r = t
        .put_manifest(
            "del",
            "two",
            OCI_MANIFEST,
            &t.get("/v2/del/manifests/one").await.bytes().await.unwrap(),
        )
        .await;
    assert_eq!(r.status(), 201);
    // By tag: the tag goes, the manifest stays.
    assert_eq!(t.delete("/v2/del/manifests/one").await.status(), 202);
    assert_error(t.get("/v2/del/manifests/one").await, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(t.get(&format!("/v2/del/manifests/{d}")).await.status(), 200);
    assert_error(t.delete("/v2/del/manifests/one").await, 404, "MANIFEST_UNKNOWN").await;
    // A blob in use cannot be deleted.
    let layer = Digest::sha256_of(b"l1");
    assert_error(t.delete(&format!("/v2/del/blobs/{layer}")).await, 409, "DENIED").await;
    // By digest: the manifest and every tag on it go.
    assert_eq!(t.delete(&format!("/v2/del/manifests/{d}")).await.status(), 202);
    assert_error(t.get("/v2/del/manifests/two").await, 404, "MANIFEST_UNKNOWN").await;
    assert_error(t.get(&format!("/v2/del/manifests/{d}")).await, 404, "MANIFEST_UNKNOWN").await;
    assert_error(
        t.delete(&format!("/v2/del/manifests/{d}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // Now the blob can go.
    assert_eq!(t.delete(&format!("/v2/del/blobs/{layer}")).await.status(), 202);
    assert_error(t.get(&format!("/v2/del/blobs/{layer}")).await, 404, "BLOB_UNKNOWN").await;
    assert_error(t.delete(&format!("/v2/del/blobs/{layer}")).await, 404, "BLOB_UNKNOWN").await;
    assert_error(
        t.delete(&format!("/v2/nowhere/blobs/{layer}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(t.delete("/v2/nowhere/manifests/x").await, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn tag_listing_pages() {
    let t = TestRegistry::start().await;
    let (_, m) = t.push_image("tags/repo", "seed", &[b"x"]).await;
    for tag in ["b", "a", "c", "D"] {
        assert_eq!(t.put_manifest("tags/repo", tag, OCI_MANIFEST, &m).await.status(), 201);
    }
    let r = t.get("/v2/tags/repo/tags/list").await;
    assert!(r.headers().get("link").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"name": "tags/repo", "tags": ["D", "a", "b", "c", "seed"]}));
    let r = t.get("/v2/tags/repo/tags/list?n=2").await;
    assert_eq!(header(&r, "link"), "</v2/tags/repo/tags/list?n=2&last=a>; rel=\"next\"");
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["D", "a"]));
    let r = t.get("/v2/tags/repo/tags/list?n=2&last=a").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["b", "c"]));
    let r = t.get("/v2/tags/repo/tags/list?n=2&last=c").await;
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["seed"]));
    let r = t.get("/v2/tags/repo/tags/list?n=0").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    assert_error(
        t.get("/v2/tags/repo/tags/list?n=x").await,
        400,
        "PAGINATION_NUMBER_INVALID",
    )
    .await;
    assert_error(t.get("/v2/tags/none/tags/list").await, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn catalog_pages() {
    let t = TestRegistry::start().await;
    for repo in ["zeta", "alpha/one", "alpha/two", "mid"] {
        t.push_image(repo, "v", &[b"l"]).await;
    }
    // A repository with only an unfinished upload is not listed.
    t.req(Method::POST, "/v2/empty/blobs/uploads/").send().await.unwrap();
    let v: Value = t.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(v, json!({"repositories": ["alpha/one", "alpha/two", "mid", "zeta"]}));
    let r = t.get("/v2/_catalog?n=3").await;
    assert_eq!(header(&r, "link"), "</v2/_catalog?n=3&last=mid>; rel=\"next\"");
    let r = t.get("/v2/_catalog?n=3&last=mid").await;
    assert_eq!(r.json::<Value>().await.unwrap()["repositories"], json!(["zeta"]));
    let r = t.get("/v2/_catalog?n=1&last=alpha%2Fone").await;
    assert_eq!(header(&r, "link"), "</v2/_catalog?n=1&last=alpha%2Ftwo>; rel=\"next\"");
}

#[tokio::test]
async fn referrers() {
    let t = TestRegistry::start().await;
    let (subject, subject_bytes) = t.push_image("app", "v1", &[b"app layer"]).await;
    let empty = t.push_blob("app", b"{}").await;
    let sig_layer = t.push_blob("app", b"signature bytes").await;
    let referrer = |artifact_type: &str, n: u8| {
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sig_layer.to_string(), "size": 15}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": subject_bytes.len()},
            "annotations": {"n": n.to_string()}})
        .to_string()
    };
    let sig = referrer("application/vnd.example.signature", 1);
    let sbom = referrer("application/spdx+json", 2);
    for body in [&sig, &sbom] {
        let d = Digest::sha256_of(body.as_bytes());
        let r = t
            .put_manifest("app", &d.to_string(), OCI_MANIFEST, body.as_bytes())
            .await;
        assert_eq!(r.status(), 201);
        assert_eq!(header(&r, "oci-subject"), subject.to_string());
    }
    let r = t.get(&format!("/v2/app/referrers/{subject}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let ms = v["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    let sig_entry = ms
        .iter()
        .find(|m| m["artifactType"] == "application/vnd.example.signature")
        .unwrap();
    assert_eq!(sig_entry["digest"], Digest::sha256_of(sig.as_bytes()).to_string());
    assert_eq!(sig_entry["size"], sig.len());
    assert_eq!(sig_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(sig_entry["annotations"]["n"], "1");

    let r = t
        .get(&format!(
            "/v2/app/referrers/{subject}?artifactType=application/spdx%2Bjson"
        ))
        .await;
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["artifactType"], "application/spdx+json");

    // A subject that is not (yet) here: an empty index, not an error.
    let r = t
        .get(&format!("/v2/app/referrers/{}", Digest::sha256_of(b"unknown")))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["manifests"], json!([]));
    let r = t.get(&format!("/v2/unknown-repo/referrers/{subject}")).await;
    assert_eq!(r.status(), 200);
    assert_error(t.get("/v2/app/referrers/sha256:nope").await, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn expired_uploads_are_purged() {
    let t = TestRegistry::start().await;
    let loc = header(
        &t.req(Method::POST, "/v2/p/blobs/uploads/").send().await.unwrap(),
        "location",
    )
    .to_string();
    t.req(Method::PATCH, &loc).body(vec![7u8; 1000]).send().await.unwrap();
    // Young uploads survive a purge.
    assert_eq!(
        t.registry
            .purge_uploads(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(t.get(&loc).await.status(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        t.registry
            .purge_uploads(std::time::Duration::from_millis(1))
            .await
            .unwrap(),
        1
    );
    assert_error(t.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let uploads = std::fs::read_dir(t.dir.path().join("storage/uploads")).unwrap().count();
    assert_eq!(uploads, 0);
}
