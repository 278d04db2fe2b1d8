//! Redis as the replicas' shared state: sessions with their CSRF tokens,
//! failed-login counts, and what happens when Redis goes away and comes back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

async fn current_user(base: &str, sid: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/api/v2.0/users/current"))
        .header("cookie", sid)
        .send()
        .await
        .unwrap()
}

async fn token_status(base: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .get(format!(
            "{base}/service/token?service=berth&scope=repository:library/r:pull"
        ))
        .basic_auth("admin", Some(password))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Two servers with separate databases and storage share only Redis: a
/// session begun on one is known to the other, and so are failed logins.
#[test]
fn sessions_and_failed_logins_live_in_redis() {
    if !have("redis-server", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let url = redis.url();
    let env = [("BERTH_REDIS_URL", url.as_str()), ("BERTH_AUTH_MAX_FAILED_LOGINS", "3")];
    let a = Berth::start_with(&tmp.path().join("a"), &[], &env);
    let b = Berth::start_with(&tmp.path().join("b"), &[], &env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (sid, csrf) = portal_login(&a.url()).await;
        let me: Value = current_user(&b.url(), &sid).await.json().await.unwrap();
        assert_eq!(me["username"], "admin", "b does not know a's session: {me}");
        // The CSRF token travels with the session.
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v2.0/projects", b.url()))
            .header("cookie", &sid)
            .header("x-harbor-csrf-token", &csrf)
            .json(&serde_json::json!({"project_name": "via-b"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        // Signing out on b ends the session on a.
        let resp = reqwest::Client::new()
            .get(format!("{}/c/log_out", b.url()))
            .header("cookie", &sid)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        assert_eq!(current_user(&a.url(), &sid).await.status(), 401);

        // Failed logins on a count on b.
        for _ in 0..3 {
            assert_eq!(token_status(&a.url(), "wrong-password").await, 401);
        }
        assert_eq!(token_status(&b.url(), ADMIN_PASSWORD).await, 429);
    });
}

/// Redis stops: registry traffic goes on, session calls fail with a clear
/// 503, nothing crashes; Redis returns: sign-in works again.
#[test]
fn a_lost_redis_gives_clear_errors_and_recovers() {
    if !have("redis-server", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&tmp.path().join("redis"));
    let url = redis.url();
    let mut berth = Berth::start_with(&tmp.path().join("data"), &[], &[("BERTH_REDIS_URL", url.as_str())]);
    let base = berth.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (sid, _) = portal_login(&base).await;
        assert_eq!(current_user(&base, &sid).await.status(), 200);

        redis.stop();
        let resp = current_user(&base, &sid).await;
        assert_eq!(resp.status(), 503);
        let body = resp.text().await.unwrap();
        assert!(body.contains("Redis is unavailable"), "{body}");

        // Tokens need no Redis: logins are counted in the replica meanwhile.
        assert_eq!(token_status(&base, ADMIN_PASSWORD).await, 200);
        let token = admin_token(&base, &["repository:library/r:pull,push"]).await;
        let c = client_with_token(&token);
        let blob = b"pushed while Redis was down".to_vec();
        let digest = format!("sha256:{}", sha256_hex(&blob));
        let resp = c
            .post(format!("{base}/v2/library/r/blobs/uploads/?digest={digest}"))
            .body(blob)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200);
        let text = ready.text().await.unwrap();
        assert!(text.contains("redis: Redis is unavailable"), "{text}");

        // Redis is back (empty, as it keeps nothing): signing in works again.
        let _redis = RedisServer::start(&tmp.path().join("redis"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let resp = reqwest::Client::new()
                .post(format!("{base}/c/login"))
                .form(&[("principal", "admin"), ("password", ADMIN_PASSWORD)])
                .send()
                .await
                .unwrap();
            if resp.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "no recovery: {}", resp.status());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (sid, _) = portal_login(&base).await;
        assert_eq!(current_user(&base, &sid).await.status(), 200);
        let ready = reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(ready.contains("redis: ok"), "{ready}");
    });
    assert!(
        berth.child.try_wait().unwrap().is_none(),
        "berth exited:\n{}",
        berth.log_text()
    );
    berth.terminate();
}

/// A lease in Redis has one holder at a time, is renewed by its holder, and
/// passes to another only after it runs out.
#[test]
fn a_lease_in_redis_has_one_holder() {
    use berth_core::shared::Shared;
    if !have("redis-server", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = berth_db::testing::sqlite().await;
        let a = Shared::with_redis(t.db.clone(), &redis.url()).unwrap();
        let b = Shared::with_redis(t.db.clone(), &redis.url()).unwrap();
        let ttl = Duration::from_millis(400);
        assert!(a.lease("job", "a", ttl).await);
        assert!(!b.lease("job", "b", ttl).await, "two holders at once");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(a.lease("job", "a", ttl).await, "the holder could not renew");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!b.lease("job", "b", ttl).await, "renewal did not extend the lease");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(b.lease("job", "b", ttl).await, "an expired lease did not pass on");
        assert!(!a.lease("job", "a", ttl).await);
        // Caches: a value is there until its time runs out.
        a.cache_put("k", b"v", Duration::from_millis(300)).await;
        assert_eq!(b.cache_get("k").await.as_deref(), Some(&b"v"[..]));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(b.cache_get("k").await, None);
    });
}
