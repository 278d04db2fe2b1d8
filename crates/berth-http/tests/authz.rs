//! The authorization table: for every registry and API endpoint, which
//! principals may use it on a private project. The test is generated from
//! the table and from the server's own route lists, so a route missing from
//! the table fails it.

mod fixture;

use std::sync::Arc;
use std::time::Duration;

use fixture::{Fixture, ALL, P, PW};

use berth_core::auth::{AuthService, AuthSettings};
use berth_core::{Limits, Registry};
use berth_http::api::{routes, Need};
use berth_http::{AppState, V2_ROUTES};
use berth_storage::FsStore;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

/// What each principal holds in the private project `secret`. This is the
/// table's own statement of Harbor's roles, written independently of the code.
fn holds(p: P, perm: &str) -> bool {
    use P::*;
    let who: &[P] = match perm {
        "pull" | "read_project" => &[
            LimitedGuest,
            Guest,
            Developer,
            Maintainer,
            ProjectAdmin,
            Sysadmin,
            RobotReader,
            RobotWriter,
        ],
        "list_repositories" => &[
            Guest,
            Developer,
            Maintainer,
            ProjectAdmin,
            Sysadmin,
            RobotReader,
            RobotWriter,
        ],
        "push" | "create_tag" => &[Developer, Maintainer, ProjectAdmin, Sysadmin, RobotWriter],
        "delete" | "delete_tag" => &[Maintainer, ProjectAdmin, Sysadmin, RobotWriter],
        "list_members" | "list_logs" => &[Guest, Developer, Maintainer, ProjectAdmin, Sysadmin, RobotWriter],
        "list_robots" => &[Maintainer, ProjectAdmin, Sysadmin, RobotWriter],
        "update_project" | "delete_project" | "manage_members" | "manage_robots" => &[ProjectAdmin, Sysadmin],
        other => panic!("the table has no row for permission {other}"),
    };
    who.contains(&p)
}

fn perm_name(perm: berth_core::auth::Perm) -> &'static str {
    use berth_core::auth::Perm::*;
    match perm {
        Pull => "pull",
        Push => "push",
        Delete => "delete",
        ReadProject => "read_project",
        ListRepositories => "list_repositories",
        UpdateProject => "update_project",
        DeleteProject => "delete_project",
        ListMembers => "list_members",
        ManageMembers => "manage_members",
        ListRobots => "list_robots",
        ManageRobots => "manage_robots",
        ListLogs => "list_logs",
        CreateTag => "create_tag",
        DeleteTag => "delete_tag",
    }
}

fn allowed(p: P, need: Need, method: &Method) -> bool {
    match need {
        Need::Anyone => true,
        Need::SignedIn => p != P::Anonymous,
        Need::User => !matches!(p, P::Anonymous | P::RobotReader | P::RobotWriter),
        Need::Sysadmin => p == P::Sysadmin,
        // The user in the path is the developer.
        Need::SelfOrSysadmin => matches!(p, P::Sysadmin | P::Developer),
        Need::Project(perm) | Need::PolicyProject(perm) => holds(p, perm_name(perm)),
        Need::RobotManager => {
            if method == Method::GET {
                holds(p, "list_robots")
            } else {
                holds(p, "manage_robots")
            }
        }
    }
}

/// Path, body and scopes for each API route, keyed by (method, path template).
fn api_request(f: &Fixture, method: &Method, path: &str) -> Option<(String, Option<Value>)> {
    let pid = &f.ids["project_id"];
    let d = &f.ids["digest"];
    let fill = |p: &str| {
        p.replace("{project}", pid)
            .replace("{user_id}", &f.ids["dev_id"])
            .replace("{mid}", &f.ids["dev_id"])
            .replace("{repo}", "app")
            .replace("{reference}", d)
            .replace("{tag}", "spare")
            .replace("{meta_name}", "public")
            .replace("{robot_id}", &f.ids["robot_id"])
            .replace("{vanity_id}", &f.ids["vanity_id"])
            .replace("{immutable_rule_id}", &f.ids["immutable_rule_id"])
            .replace("{retention_id}", &f.ids["retention_id"])
            .replace("{execution_id}", &f.ids["execution_id"])
            .replace("{task_id}", "1")
            .replace("{quota_id}", pid)
            .replace("{scrub_id}", &f.ids["scrub_id"])
            .replace("{registry_id}", &f.ids["registry_id"])
            .replace("{policy_id}", &f.ids["policy_id"])
            .replace("{webhook_policy_id}", &f.ids["webhook_policy_id"])
    };
    let body = match (method.as_str(), path) {
        ("POST", "/users") => Some(json!({"username": format!("new{}", rand_suffix()), "password": PW})),
        ("PUT", "/users/{user_id}") => Some(json!({"email": "changed@x.test"})),
        ("PUT", "/users/{user_id}/password") => Some(json!({"old_password": PW, "new_password": PW})),
        ("PUT", "/users/{user_id}/sysadmin") => Some(json!({"sysadmin_flag": false})),
        ("POST", "/projects") => Some(json!({"project_name": format!("p{}", rand_suffix())})),
        ("PUT", "/projects/{project}") => Some(json!({"metadata": {"public": "false"}})),
        ("PUT", "/projects/{project}/metadatas/{meta_name}") => Some(json!({"public": "false"})),
        ("POST", "/projects/{project}/members") => Some(json!({"role_id": 3, "member_user": {"username": "victim"}})),
        ("PUT", "/projects/{project}/members/{mid}") => Some(json!({"role_id": 2})),
        ("POST", "/projects/{project}/repositories/{repo}/artifacts/{reference}/tags") => {
            Some(json!({"name": format!("t{}", rand_suffix())}))
        }
        ("POST", "/robots") => Some(
            json!({"name": format!("r{}", rand_suffix()), "level": "project", "duration": -1,
            "permissions": [{"kind": "project", "namespace": "secret", "access": [{"resource": "repository", "action": "pull"}]}]}),
        ),
        ("PUT", "/robots/{robot_id}") => Some(json!({"description": "changed"})),
        ("PATCH", "/robots/{robot_id}") => Some(json!({})),
        ("POST", "/projects/{project}/vanity-paths") => {
            Some(json!({"path": format!("/v{}", rand_suffix()), "repo": "https://github.com/o/r"}))
        }
        ("PUT", "/configurations") => Some(json!({"project_creation_restriction": "everyone"})),
        ("POST", "/projects/{project}/immutabletagrules")
        | ("PUT", "/projects/{project}/immutabletagrules/{immutable_rule_id}") => Some(json!({
            "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "never-*"}],
            "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "nothing/**"}]}
        })),
        ("PUT", "/quotas/{quota_id}") => Some(json!({"hard": {"storage": 1_000_000_000}})),
        ("PUT", "/system/gc/schedule") => Some(json!({"schedule": {"type": "Daily"}})),
        ("POST", "/retentions/{retention_id}/executions") => Some(json!({"dry_run": true})),
        ("POST", "/retentions") | ("PUT", "/retentions/{retention_id}") => {
            Some(fixture::retention_policy(pid.parse().unwrap()))
        }
        ("POST", "/registries") | ("POST", "/registries/ping") => {
            let mut r = fixture::registry_endpoint();
            r["name"] = json!(format!("r{}", rand_suffix()));
            Some(r)
        }
        ("PUT", "/registries/{registry_id}") => Some(json!({"description": "changed"})),
        ("POST", "/replication/policies") | ("PUT", "/replication/policies/{policy_id}") => {
            let mut p = fixture::replication_policy(f.ids["registry_id"].parse().unwrap());
            p["name"] = json!(format!("p{}", rand_suffix()));
            Some(p)
        }
        ("POST", "/projects/{project}/webhook/policies")
        | ("PUT", "/projects/{project}/webhook/policies/{webhook_policy_id}") => {
            let mut p = fixture::webhook_policy();
            p["name"] = json!(format!("h{}", rand_suffix()));
            Some(p)
        }
        ("POST", "/replication/executions") => Some(json!({"policy_id": f.ids["policy_id"].parse::<i64>().unwrap()})),
        _ => None,
    };
    let mut url = fill(path);
    match (method.as_str(), path) {
        ("DELETE", "/users/{user_id}") => url = url.replace(&f.ids["dev_id"], &f.ids["victim_id"]),
        ("HEAD", "/projects") => url.push_str("?project_name=secret"),
        ("GET", "/robots") => url.push_str(&format!("?q=Level=project,ProjectID={pid}")),
        _ => {}
    }
    Some((format!("/api/v2.0{url}"), body))
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_follows_the_table() {
    let mut failures = Vec::new();
    let mut covered = 0;
    for (info, _) in routes() {
        // A fresh world per route: destructive calls do not leak between routes.
        let f = Fixture::new().await;
        let Some((url, body)) = api_request(&f, &info.method, info.path) else {
            failures.push(format!(
                "{} {} is missing from the authorization table",
                info.method, info.path
            ));
            continue;
        };
        covered += 1;
        for p in ALL {
            let mut req = f.client.request(info.method.clone(), format!("{}{url}", f.base));
            if let Some((u, pw)) = f.creds.get(&p) {
                req = req.basic_auth(u, Some(pw));
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let status = req.send().await.unwrap().status();
            let want = allowed(p, info.need, &info.method);
            let denied = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
            let right = if want {
                !denied
            } else if p == P::Anonymous {
                status == StatusCode::UNAUTHORIZED
            } else {
                status == StatusCode::FORBIDDEN
            };
            if !right {
                failures.push(format!(
                    "{} {} as {p:?}: got {status}, table says {}",
                    info.method,
                    info.path,
                    if want { "allowed" } else { "denied" }
                ));
            }
        }
    }
    assert!(covered >= 40, "only {covered} routes checked");
    assert!(
        failures.is_empty(),
        "authorization table violations:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_registry_route_follows_the_table() {
    let mut failures = Vec::new();
    for (method, path) in V2_ROUTES {
        let method: Method = method.parse().unwrap();
        let f = Fixture::new().await;
        let upload = f.upload_session().await;
        let (need, scope): (&str, String) = match (method.as_str(), *path) {
            ("GET", "/v2/") => ("signed_token", String::new()),
            ("GET", "/v2/_catalog") => ("catalog", "registry:catalog:*".into()),
            (_, p) if method == Method::DELETE && !p.contains("uploads") => {
                ("delete", "repository:secret/app:delete".into())
            }
            ("PUT", _) | ("PATCH", _) | ("POST", _) => ("push", "repository:secret/app:pull,push".into()),
            (_, p) if p.contains("uploads") => ("push", "repository:secret/app:pull,push".into()),
            _ => ("pull", "repository:secret/app:pull".into()),
        };
        let url = path
            .replace("{name}", "secret/app")
            .replace("{reference}", "v1")
            .replace("{digest}", &f.ids["layer"])
            .replace("{id}", &upload);
        let url = if *path == "/v2/{name}/blobs/{digest}" && method == Method::DELETE {
            url.replace(&f.ids["layer"], &f.ids["loose"])
        } else {
            url
        };
        let url = if *path == "/v2/{name}/referrers/{digest}" {
            url.replace(&f.ids["layer"], &f.ids["digest"])
        } else {
            url
        };
        let url = if method == Method::PUT && url.contains("uploads") {
            format!("{url}?digest={}", f.ids["layer"])
        } else {
            url
        };
        for p in ALL {
            let scopes: Vec<&str> = if scope.is_empty() { vec![] } else { vec![scope.as_str()] };
            let token = f.token(p, &scopes).await.unwrap();
            let mut req = f
                .client
                .request(method.clone(), format!("{}{url}", f.base))
                .bearer_auth(&token);
            if *path == "/v2/{name}/manifests/{reference}" && method == Method::PUT {
                req = req
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(f.ids["manifest"].clone());
            } else if method == Method::PATCH || (method == Method::PUT && url.contains("uploads")) {
                req = req.body(b"layer".to_vec());
            }
            let status = req.send().await.unwrap().status();
            let want = match need {
                "signed_token" => true,
                "catalog" => p == P::Sysadmin,
                perm => holds(p, perm),
            };
            let denied = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
            if want == denied {
                failures.push(format!(
                    "{method} {path} as {p:?}: got {status}, table says {}",
                    if want { "allowed" } else { "denied" }
                ));
            }
        }
        // No token at all: always a 401 challenge.
        let r = f
            .client
            .request(method.clone(), format!("{}{url}", f.base))
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::UNAUTHORIZED || r.headers().get("www-authenticate").is_none() {
            failures.push(format!(
                "{method} {path} without a token: got {} without a challenge",
                r.status()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "authorization table violations:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    use berth_core::auth::{ClaimAccess, Claims, TokenSigner};
    let f = Fixture::new().await;
    let now = berth_db::now_ms() / 1000;
    let claims = |aud: &str, exp: i64| Claims {
        iss: "berth-token-issuer".into(),
        sub: "admin".into(),
        aud: aud.into(),
        exp,
        nbf: now - 10,
        iat: now - 10,
        jti: "t".into(),
        access: vec![ClaimAccess {
            kind: "repository".into(),
            name: "secret/app".into(),
            actions: vec!["pull".into()],
        }],
    };
    let right_key = TokenSigner::new(vec![9; 32], "berth-token-issuer", 60);
    let wrong_key = TokenSigner::new(vec![8; 32], "berth-token-issuer", 60);
    let get = |token: String| {
        f.client
            .get(format!("{}/v2/secret/app/manifests/v1", f.base))
            .bearer_auth(token)
            .send()
    };
    // The control: a well-made token works.
    assert_eq!(
        get(right_key.sign(&claims("berth", now + 300))).await.unwrap().status(),
        200
    );
    for (why, token) in [
        ("bad signature", wrong_key.sign(&claims("berth", now + 300))),
        ("expired beyond the leeway", right_key.sign(&claims("berth", now - 120))),
        ("another service", right_key.sign(&claims("other-registry", now + 300))),
        ("garbage", "not.a.token".to_string()),
    ] {
        let r = get(token).await.unwrap();
        assert_eq!(r.status(), 401, "{why}");
        assert!(r.headers().contains_key("www-authenticate"), "{why}");
    }
    // Asking for more than granted: the developer asks for delete and gets a
    // token without it, which the registry then refuses.
    let t = f
        .token(P::Developer, &["repository:secret/app:pull,push,delete"])
        .await
        .unwrap();
    let payload = t.split('.').nth(1).unwrap();
    let decoded = base64_decode(payload);
    assert!(
        decoded.contains("\"pull\"") && decoded.contains("\"push\"") && !decoded.contains("delete"),
        "{decoded}"
    );
    let r = f
        .client
        .delete(format!("{}/v2/secret/app/manifests/spare", f.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

fn base64_decode(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn repeated_failed_logins_get_429_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let t = berth_db::testing::sqlite().await;
    let store = FsStore::open(dir.path().join("s")).unwrap();
    let registry = Arc::new(Registry::new(t.db.clone(), Arc::new(store), Limits::default()));
    let settings = AuthSettings {
        max_failed_logins: 3,
        lockout: Duration::from_secs(60),
        ..AuthSettings::default()
    };
    let accounts = Arc::new(AuthService::new(t.db.clone(), vec![9; 32], settings));
    accounts.ensure_admin(Some(PW)).await.unwrap();
    let app = berth_http::router(AppState {
        registry,
        auth: accounts.clone(),
        accounts: Some(accounts),
        public_url: None,
        audit_pulls: true,
        https: false,
        vanity: None,
        replicator: None,
        proxy: None,
        webhooks: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let c = Client::new();
    let login = |pw: &'static str| {
        c.get(format!("{base}/service/token?service=berth"))
            .basic_auth("admin", Some(pw))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(login("Wrong-Passw0rd").await.unwrap().status(), 401);
    }
    // Locked now: even the right password waits.
    let r = login(PW).await.unwrap();
    assert_eq!(r.status(), 429);
    let r = c
        .get(format!("{base}/api/v2.0/users/current"))
        .basic_auth("admin", Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Other accounts are not affected.
    assert_eq!(login_other(&c, &base).await, 401);
    let (rows, _) =
        t.db.list_audit(
            &berth_db::AuditFilter {
                operation: Some("login".into()),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .unwrap();
    assert_eq!(rows.iter().filter(|r| r.username == "admin" && !r.success).count(), 3);
}

async fn login_other(c: &Client, base: &str) -> u16 {
    c.get(format!("{base}/service/token"))
        .basic_auth("nobody", Some("Whatever-1"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn pushes_deletes_logins_and_membership_changes_are_audited() {
    let f = Fixture::new().await;
    // A docker-login-style token request, a tag delete over the registry API.
    let r = f
        .client
        .get(format!("{}/service/token?service=berth", f.base))
        .basic_auth("ma", Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = f
        .token(P::Maintainer, &["repository:secret/app:pull,delete"])
        .await
        .unwrap();
    let r = f
        .client
        .delete(format!("{}/v2/secret/app/manifests/spare", f.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t = f.token(P::Guest, &["repository:secret/app:pull"]).await.unwrap();
    let r = f
        .client
        .get(format!("{}/v2/secret/app/manifests/v1", f.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = f
        .admin(Method::GET, "/api/v2.0/audit-logs?page_size=100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let total: i64 = r.headers()["x-total-count"].to_str().unwrap().parse().unwrap();
    let v: Vec<Value> = r.json().await.unwrap();
    assert_eq!(total as usize, v.len());
    let has = |user: &str, op: &str, res: &str| {
        v.iter()
            .any(|e| e["username"] == user && e["operation"] == op && e["resource"].as_str().unwrap().contains(res))
    };
    assert!(has("admin", "create", "secret/app:v1"), "push audited");
    assert!(has("ma", "delete", "secret/app:spare"), "delete audited");
    assert!(has("ma", "login", "ma"), "login audited");
    assert!(has("gu", "pull", "secret/app:v1"), "pulls audited when enabled");

    assert!(has("admin", "create", "secret/dev:developer"), "membership audited");
    assert!(has("admin", "create", "robot$secret+writer"), "robot creation audited");
    // The project's own log holds only the project's entries.
    let r = f
        .admin(Method::GET, "/api/v2.0/projects/secret/logs?page_size=100")
        .header("x-is-resource-name", "true")
        .send()
        .await
        .unwrap();
    let v: Vec<Value> = r.json().await.unwrap();
    assert!(!v.is_empty() && v.iter().all(|e| e["resource"].as_str().unwrap().starts_with("secret/")));
}
