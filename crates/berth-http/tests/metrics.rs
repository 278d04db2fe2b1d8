//! `/metrics` counts what happened, and every answer carries a request ID.

mod common;

use common::TestRegistry;
use reqwest::Method;

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_requests_bytes_and_storage() {
    let r = TestRegistry::start().await;
    let data = vec![7u8; 300_000];
    let d = r.push_blob("lib/m", &data).await;
    for _ in 0..3 {
        let got = r.get(&format!("/v2/lib/m/blobs/{d}")).await;
        assert_eq!(got.bytes().await.unwrap().len(), data.len());
    }
    assert_eq!(
        r.get("/v2/lib/m/blobs/sha256:".to_string().as_str()).await.status(),
        400
    );
    let text = r.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(
            &text,
            r#"berth_http_requests_total{route="v2_blob",method="GET",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(&text, r#"berth_http_request_duration_seconds_count{route="v2_blob"}"#),
        4.0
    );
    assert!(sample(&text, "berth_http_response_bytes_total") >= 3.0 * data.len() as f64);
    assert!(sample(&text, "berth_http_request_bytes_total") >= data.len() as f64);
    assert_eq!(sample(&text, "berth_storage_blobs"), 1.0);
    assert_eq!(sample(&text, "berth_storage_bytes"), data.len() as f64);
    assert_eq!(sample(&text, "berth_database_up"), 1.0);
    assert_eq!(sample(&text, "berth_uploads_in_progress"), 0.0);
    // Repository names never become labels.
    assert!(!text.contains("lib/m"), "{text}");
}

#[tokio::test]
async fn every_answer_has_a_request_id() {
    let r = TestRegistry::start().await;
    let given = r
        .req(Method::GET, "/v2/")
        .header("x-request-id", "ci-job-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "ci-job-42");
    let made = r.get("/v2/nope/manifests/latest").await;
    let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(id.len() >= 12, "{id}");
    let bad = r
        .req(Method::GET, "/v2/")
        .header("x-request-id", "has spaces in it")
        .send()
        .await
        .unwrap();
    assert_ne!(bad.headers()["x-request-id"], "has spaces in it");
}
