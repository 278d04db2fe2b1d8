//! Several berth replicas on one database and one shared storage directory,
//! as in a Kubernetes deployment: nothing that one replica knows is missing
//! from another.

mod common;

use common::*;
use serde_json::Value;

async fn replicas_share_everything(db_url: &str, redis: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared-storage");
    let mut env = vec![
        ("BERTH_DATABASE_URL", db_url),
        ("BERTH_STORAGE_PATH", shared.to_str().unwrap()),
    ];
    if let Some(r) = redis {
        env.push(("BERTH_REDIS_URL", r));
    }
    // Started together: migrations, the first admin, the library project and
    // the token key are made once between them.
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let dir = tmp.path().join(format!("replica-{i}"));
            let env = env.clone();
            std::thread::spawn(move || {
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                Berth::start_with(&dir, &[], &env)
            })
        })
        .collect();
    let r: Vec<Berth> = starts.into_iter().map(|h| h.join().unwrap()).collect();
    let urls: Vec<String> = r.iter().map(Berth::url).collect();

    // A token from one replica is accepted by every other.
    let token = admin_token(&urls[0], &["repository:library/ha:pull,push"]).await;
    let c = client_with_token(&token);
    for u in &urls {
        let s = c.get(format!("{u}/v2/")).send().await.unwrap().status();
        assert_eq!(s, 200, "token refused by {u}");
    }

    // One upload, its chunks sent round-robin to different replicas.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = format!("sha256:{}", sha256_hex(&data));
    let resp = c
        .post(format!("{}/v2/library/ha/blobs/uploads/", urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let mut loc = resp.headers()["location"].to_str().unwrap().to_string();
    for (i, chunk) in data.chunks(1_000_000).enumerate() {
        let start = i * 1_000_000;
        let u = &urls[(i + 1) % 3];
        let resp = c
            .patch(format!("{u}{loc}"))
            .header("content-range", format!("{start}-{}", start + chunk.len() - 1))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "chunk {i} on {u}");
        loc = resp.headers()["location"].to_str().unwrap().to_string();
    }
    let resp = c.put(format!("{}{loc}?digest={digest}", urls[2])).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    for u in &urls {
        let got = c
            .get(format!("{u}/v2/library/ha/blobs/{digest}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(format!("sha256:{}", sha256_hex(&got)), digest, "blob on {u}");
    }

    // The same blob pushed to two replicas at the same moment: both succeed, one copy.
    let other: Vec<u8> = (0..2_000_000u32).map(|i| (i % 13) as u8).collect();
    let od = format!("sha256:{}", sha256_hex(&other));
    let push = |u: String| {
        let c = c.clone();
        let other = other.clone();
        let od = od.clone();
        async move {
            c.post(format!("{u}/v2/library/ha/blobs/uploads/?digest={od}"))
                .body(other)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let (a, b) = tokio::join!(push(urls[0].clone()), push(urls[1].clone()));
    assert_eq!((a.as_u16(), b.as_u16()), (201, 201));
    let got = c
        .get(format!("{}/v2/library/ha/blobs/{od}", urls[2]))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), other.len());

    // A portal session started on one replica works on the others, CSRF included.
    let plain = reqwest::Client::new();
    let (sid, csrf) = portal_login(&urls[0]).await;
    let me: Value = plain
        .get(format!("{}/api/v2.0/users/current", urls[1]))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "admin");
    let resp = plain
        .post(format!("{}/api/v2.0/projects", urls[2]))
        .header("cookie", &sid)
        .header("x-harbor-csrf-token", &csrf)
        .json(&serde_json::json!({"project_name": "made-on-replica-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // Losing a replica loses nothing: the others serve what it took in.
    let mut r = r;
    r[0].kill();
    let got = c
        .get(format!("{}/v2/library/ha/blobs/{digest}", urls[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
}

#[test]
fn three_replicas_on_postgresql_and_shared_storage() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = berth_db::testing::server_urls()[0].clone();
        let Some(t) = berth_db::testing::on_server(&url).await else {
            return;
        };
        replicas_share_everything(&t.url, None).await;
        t.drop_db().await;
    });
}

#[test]
fn three_replicas_on_mysql_and_shared_storage() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = berth_db::testing::server_urls()[1].clone();
        let Some(t) = berth_db::testing::on_server(&url).await else {
            return;
        };
        replicas_share_everything(&t.url, None).await;
        t.drop_db().await;
    });
}

#[test]
fn three_replicas_on_postgresql_with_redis() {
    if !have("redis-server", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = berth_db::testing::server_urls()[0].clone();
        let Some(t) = berth_db::testing::on_server(&url).await else {
            return;
        };
        replicas_share_everything(&t.url, Some(&redis.url())).await;
        t.drop_db().await;
    });
}
