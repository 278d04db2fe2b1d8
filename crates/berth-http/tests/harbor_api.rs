//! Harbor's REST API as its users and scripts call it.

mod fixture;

use fixture::{Fixture, P, PW};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn system_endpoints() {
    let f = Fixture::new().await;
    let r = f.client.get(format!("{}/api/v2.0/ping", f.base)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Pong");
    let v: Value = f
        .client
        .get(format!("{}/api/v2.0/health", f.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "healthy");
    assert!(v["components"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "database" && c["status"] == "healthy"));
    let v: Value = f
        .client
        .get(format!("{}/api/v2.0/systeminfo", f.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["auth_mode"], "db_auth");
    assert_eq!(v["project_creation_restriction"], "everyone");
    let v: Value = f
        .client
        .get(format!("{}/api/v2.0/openapi.json", f.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["openapi"], "3.0.3");
    assert!(v["paths"]["/api/v2.0/projects/{project}/members"]["post"]["summary"].is_string());
    let v: Value = f
        .admin(Method::GET, "/api/v2.0/users/current")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["username"].as_str(), v["sysadmin_flag"].as_bool()),
        (Some("admin"), Some(true))
    );
    assert_eq!(
        f.client
            .get(format!("{}/api/v2.0/users/current", f.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn projects_paging_and_visibility() {
    let f = Fixture::new().await;
    for i in 0..12 {
        let r = f
            .admin(Method::POST, "/api/v2.0/projects")
            .json(&json!({"project_name": format!("team-{i:02}"), "metadata": {"public": "true"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert!(r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/api/v2.0/projects/"));
    }
    let r = f
        .admin(Method::POST, "/api/v2.0/projects")
        .json(&json!({"project_name": "team-00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "CONFLICT");
    let r = f
        .admin(Method::POST, "/api/v2.0/projects")
        .json(&json!({"project_name": "Bad Name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // 12 team projects + library + secret = 14; page 2 of size 5.
    let r = f
        .admin(Method::GET, "/api/v2.0/projects?page=2&page_size=5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-total-count"], "14");
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(
        link.contains("rel=\"prev\"") && link.contains("rel=\"next\"") && link.contains("page=3"),
        "{link}"
    );
    let v: Vec<Value> = r.json().await.unwrap();
    assert_eq!(v.len(), 5);
    assert_eq!(v[0]["name"], "team-03");
    let v: Vec<Value> = f
        .admin(Method::GET, "/api/v2.0/projects?name=team-1&page_size=100")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v.len(), 2);
    // A stranger sees public projects but not `secret`; anonymous the same.
    let (u, pw) = &f.creds[&P::Stranger];
    let v: Vec<Value> = f
        .client
        .get(format!("{}/api/v2.0/projects?page_size=100", f.base))
        .basic_auth(u, Some(pw))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!v.iter().any(|p| p["name"] == "secret"));
    assert_eq!(v.len(), 13);
    // HEAD by name.
    let r = f
        .client
        .head(format!("{}/api/v2.0/projects?project_name=team-05", f.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = f
        .client
        .head(format!("{}/api/v2.0/projects?project_name=nope", f.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The developer's role shows in the project.
    let (u, pw) = &f.creds[&P::Developer];
    let v: Value = f
        .client
        .get(format!("{}/api/v2.0/projects/secret", f.base))
        .basic_auth(u, Some(pw))
        .header("x-is-resource-name", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["current_user_role_id"], 2);
    assert_eq!(v["metadata"]["public"], "false");
    assert_eq!(v["repo_count"], 1);
    // Admin-only project creation.
    let r = f
        .admin(Method::PUT, "/api/v2.0/configurations")
        .json(&json!({"project_creation_restriction": "adminonly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = f
        .client
        .post(format!("{}/api/v2.0/projects", f.base))
        .basic_auth(u, Some(pw))
        .json(&json!({"project_name": "devs"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = f
        .admin(Method::PUT, "/api/v2.0/configurations")
        .json(&json!({"project_creation_restriction": "sometimes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn members_repositories_artifacts_and_tags() {
    let f = Fixture::new().await;
    let pid = &f.ids["project_id"];
    let v: Vec<Value> = f
        .admin(Method::GET, &format!("/api/v2.0/projects/{pid}/members"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dev = v.iter().find(|m| m["entity_name"] == "dev").unwrap();
    assert_eq!(
        (dev["role_id"].as_i64(), dev["role_name"].as_str()),
        (Some(2), Some("developer"))
    );
    let mid = dev["id"].as_i64().unwrap();
    let r = f
        .admin(Method::PUT, &format!("/api/v2.0/projects/{pid}/members/{mid}"))
        .json(&json!({"role_id": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = f
        .admin(Method::GET, &format!("/api/v2.0/projects/{pid}/members/{mid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["role_name"], "maintainer");
    let r = f
        .admin(Method::POST, &format!("/api/v2.0/projects/{pid}/members"))
        .json(&json!({"role_id": 9, "member_user": {"username": "victim"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let summary: Value = f
        .admin(Method::GET, &format!("/api/v2.0/projects/{pid}/summary"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["maintainer_count"], 2);

    let r = f
        .admin(Method::GET, &format!("/api/v2.0/projects/{pid}/repositories"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-total-count"], "1");
    let v: Vec<Value> = r.json().await.unwrap();
    assert_eq!(
        (v[0]["name"].as_str(), v[0]["artifact_count"].as_i64()),
        (Some("secret/app"), Some(1))
    );
    let arts: Vec<Value> = f
        .admin(
            Method::GET,
            &format!("/api/v2.0/projects/{pid}/repositories/app/artifacts?with_tag=true"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(arts.len(), 1);
    assert_eq!(arts[0]["digest"], f.ids["digest"]);
    assert_eq!(arts[0]["type"], "IMAGE");
    let mut tags: Vec<&str> = arts[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["spare", "v1"]);
    // Tag by API, then pull it through the registry.
    let r = f
        .admin(
            Method::POST,
            "/api/v2.0/projects/secret/repositories/app/artifacts/v1/tags",
        )
        .json(&json!({"name": "release"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = f
        .admin(
            Method::POST,
            "/api/v2.0/projects/secret/repositories/app/artifacts/v1/tags",
        )
        .json(&json!({"name": "release"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let token = f
        .token(P::Sysadmin, &["repository:secret/app:pull,delete"])
        .await
        .unwrap();
    let r = f
        .client
        .get(format!("{}/v2/secret/app/manifests/release", f.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), f.ids["digest"]);
    let r = f
        .admin(
            Method::DELETE,
            "/api/v2.0/projects/secret/repositories/app/artifacts/v1/tags/release",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = f
        .client
        .get(format!("{}/v2/secret/app/manifests/release", f.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A project with repositories cannot be deleted; after the repository goes, it can.
    let r = f
        .admin(Method::DELETE, "/api/v2.0/projects/secret")
        .header("x-is-resource-name", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = f
        .admin(Method::DELETE, "/api/v2.0/projects/secret/repositories/app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = f
        .client
        .get(format!("{}/v2/secret/app/manifests/v1", f.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = f
        .admin(Method::DELETE, "/api/v2.0/projects/secret")
        .header("x-is-resource-name", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn users_and_passwords() {
    let f = Fixture::new().await;
    let r = f
        .admin(Method::POST, "/api/v2.0/users")
        .json(&json!({"username": "weak", "password": "password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "weak passwords are refused");
    let r = f
        .admin(Method::POST, "/api/v2.0/users")
        .json(&json!({"username": "dev", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = f
        .admin(Method::GET, "/api/v2.0/users?q=username%3D~gu")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-total-count"], "1");
    // The developer changes their own password, and must know the old one.
    let id = &f.ids["dev_id"];
    let dev = |pw: &str| {
        f.client
            .get(format!("{}/api/v2.0/users/current", f.base))
            .basic_auth("dev", Some(pw.to_string()))
            .send()
    };
    let r = f
        .client
        .put(format!("{}/api/v2.0/users/{id}/password", f.base))
        .basic_auth("dev", Some(PW))
        .json(&json!({"old_password": "Not-The-0ld", "new_password": "Brand-New-Passw0rd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = f
        .client
        .put(format!("{}/api/v2.0/users/{id}/password", f.base))
        .basic_auth("dev", Some(PW))
        .json(&json!({"old_password": PW, "new_password": "Brand-New-Passw0rd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(dev(PW).await.unwrap().status(), 401);
    assert_eq!(dev("Brand-New-Passw0rd").await.unwrap().status(), 200);
    // Admins cannot delete themselves.
    let me: Value = f
        .admin(Method::GET, "/api/v2.0/users/current")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = f
        .admin(Method::DELETE, &format!("/api/v2.0/users/{}", me["user_id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Granting administration.
    let r = f
        .admin(Method::PUT, &format!("/api/v2.0/users/{id}/sysadmin"))
        .json(&json!({"sysadmin_flag": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = dev("Brand-New-Passw0rd").await.unwrap().json().await.unwrap();
    assert_eq!(v["sysadmin_flag"], true);
}

#[tokio::test]
async fn robot_accounts_log_in_and_rotate_secrets() {
    let f = Fixture::new().await;
    let r = f.admin(Method::POST, "/api/v2.0/robots").json(&json!({"name": "ci", "level": "project", "duration": 30,
        "permissions": [{"kind": "project", "namespace": "secret", "access": [{"resource": "repository", "action": "pull"}, {"resource": "repository", "action": "push"}]}]}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "robot$secret+ci");
    let secret = v["secret"].as_str().unwrap().to_string();
    let id = v["id"].as_i64().unwrap();
    // The secret is shown once: not in later reads.
    let got: Value = f
        .admin(Method::GET, &format!("/api/v2.0/robots/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(got.get("secret").is_none());
    assert!(got["expires_at"].as_i64().unwrap() > 0);
    // It logs in like docker would and may push to its project only.
    let token = |s: &str, scope: &str| {
        f.client
            .get(format!("{}/service/token?service=berth&scope={scope}", f.base))
            .basic_auth("robot$secret+ci", Some(s.to_string()))
            .send()
    };
    let v: Value = token(&secret, "repository:secret/app:pull,push")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b64 = v["token"].as_str().unwrap().split('.').nth(1).unwrap().to_string();
    assert!(b64.len() > 10);
    let r = f
        .client
        .get(format!("{}/v2/secret/app/manifests/v1", f.base))
        .bearer_auth(v["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = token(&secret, "repository:library/x:push")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = f
        .client
        .post(format!("{}/v2/library/x/blobs/uploads/", f.base))
        .bearer_auth(v["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a project robot cannot push elsewhere");
    // Rotation: the old secret stops working.
    let r = f
        .admin(Method::PATCH, &format!("/api/v2.0/robots/{id}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let new_secret = r.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    assert_eq!(token(&secret, "").await.unwrap().status(), 401);
    assert_eq!(token(&new_secret, "").await.unwrap().status(), 200);
    // Disabled robots cannot log in.
    let r = f
        .admin(Method::PUT, &format!("/api/v2.0/robots/{id}"))
        .json(&json!({"disable": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(token(&new_secret, "").await.unwrap().status(), 401);
    // The project's robots are listed for managers.
    let r = f
        .admin(
            Method::GET,
            &format!("/api/v2.0/robots?q=Level=project,ProjectID={}", f.ids["project_id"]),
        )
        .send()
        .await
        .unwrap();
    let v: Vec<Value> = r.json().await.unwrap();
    assert!(v.iter().any(|r| r["name"] == "robot$secret+ci"));
    assert_eq!(
        f.admin(Method::DELETE, &format!("/api/v2.0/robots/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        f.admin(Method::GET, &format!("/api/v2.0/robots/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn browser_sessions_need_their_csrf_token() {
    let f = Fixture::new().await;
    let r = f
        .client
        .post(format!("{}/c/login", f.base))
        .form(&[("principal", "pa"), ("password", "wrong-Passw0rd")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = f
        .client
        .post(format!("{}/c/login", f.base))
        .form(&[("principal", "pa"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let sid = set_cookie.split(';').next().unwrap().to_string();
    let csrf = r.headers()["x-harbor-csrf-token"].to_str().unwrap().to_string();
    let v: Value = f
        .client
        .get(format!("{}/api/v2.0/users/current", f.base))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["username"], "pa");
    // A change without the CSRF token is refused, and changes nothing.
    let add = |token: Option<&str>| {
        let mut req = f
            .client
            .post(format!("{}/api/v2.0/projects/secret/members", f.base))
            .header("cookie", &sid)
            .header("x-is-resource-name", "true")
            .json(&json!({"role_id": 3, "member_user": {"username": "victim"}}));
        if let Some(t) = token {
            req = req.header("x-harbor-csrf-token", t);
        }
        req.send()
    };
    assert_eq!(add(None).await.unwrap().status(), 403);
    assert_eq!(add(Some("forged")).await.unwrap().status(), 403);
    let members: Vec<Value> = f
        .admin(Method::GET, "/api/v2.0/projects/secret/members")
        .header("x-is-resource-name", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!members.iter().any(|m| m["entity_name"] == "victim"));
    assert_eq!(add(Some(&csrf)).await.unwrap().status(), 201);
    // After signing out the cookie is worthless.
    let r = f
        .client
        .get(format!("{}/c/log_out", f.base))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let r = f
        .client
        .get(format!("{}/api/v2.0/users/current", f.base))
        .header("cookie", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Robots have no browser sessions.
    let (u, pw) = &f.creds[&P::RobotWriter];
    let r = f
        .client
        .post(format!("{}/c/login", f.base))
        .form(&[("principal", u.as_str()), ("password", pw.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn system_robots_reach_every_project_they_name() {
    let f = Fixture::new().await;
    let r = f.admin(Method::POST, "/api/v2.0/robots").json(&json!({"name": "mirror", "level": "system", "duration": -1,
        "permissions": [{"kind": "project", "namespace": "*", "access": [{"resource": "repository", "action": "pull"}]}]}))
        .send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "robot$mirror");
    let secret = v["secret"].as_str().unwrap();
    let r = f
        .client
        .get(format!(
            "{}/service/token?service=berth&scope=repository:secret/app:pull,push",
            f.base
        ))
        .basic_auth("robot$mirror", Some(secret))
        .send()
        .await
        .unwrap();
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let r = f
        .client
        .get(format!("{}/v2/secret/app/manifests/v1", f.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = f
        .client
        .post(format!("{}/v2/secret/app/blobs/uploads/", f.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "pull only");
    // Only administrators create system robots.
    let (u, pw) = &f.creds[&P::ProjectAdmin];
    let r = f.client.post(format!("{}/api/v2.0/robots", f.base)).basic_auth(u, Some(pw)).json(&json!({"name": "x", "level": "system",
        "permissions": [{"kind": "project", "namespace": "*", "access": [{"resource": "repository", "action": "pull"}]}]}))
        .send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn vanity_paths_managed_through_the_api_are_served() {
    let f = Fixture::new().await;
    let vanity = berth_http::vanity::Vanity::from_config(
        berth_core::vanity::VanityConfig {
            host: Some("go.example.test".into()),
            cache_max_age: 60,
            paths: vec![],
        },
        None,
        "https://pkg.go.dev".into(),
    )
    .with_db(f.db.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vbase = format!("http://{}", listener.local_addr().unwrap());
    let app = berth_http::vanity::router(vanity);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // A project admin adds a path; a developer may not; bad input is refused.
    let (u, pw) = &f.creds[&P::ProjectAdmin];
    let add = |user: &str, pass: &str, body: Value| {
        f.client
            .post(format!("{}/api/v2.0/projects/secret/vanity-paths", f.base))
            .basic_auth(user, Some(pass))
            .header("x-is-resource-name", "true")
            .json(&body)
            .send()
    };
    let body =
        json!({"path": "/tools", "repo": "https://git.example.test/tools.git", "vcs": "git", "subdirectory": "cmd"});
    let r = add(u, pw, body.clone()).await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(add(u, pw, body).await.unwrap().status(), 409);
    let (du, dpw) = &f.creds[&P::Developer];
    assert_eq!(
        add(du, dpw, json!({"path": "/dev", "repo": "https://github.com/o/d"}))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        add(u, pw, json!({"path": "/x", "repo": "https://unknown.test/x"}))
            .await
            .unwrap()
            .status(),
        400,
        "vcs needed"
    );
    assert_eq!(
        add(u, pw, json!({"path": "no-slash", "repo": "https://github.com/o/x"}))
            .await
            .unwrap()
            .status(),
        400
    );

    let body = f
        .client
        .get(format!("{vbase}/tools/sub?go-get=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains(r#"content="go.example.test/tools git https://git.example.test/tools.git cmd""#),
        "{body}"
    );
    let listed: Vec<Value> = f
        .admin(Method::GET, "/api/v2.0/projects/secret/vanity-paths")
        .header("x-is-resource-name", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = listed.iter().find(|v| v["path"] == "/tools").unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = f
        .admin(Method::DELETE, &format!("/api/v2.0/projects/secret/vanity-paths/{id}"))
        .header("x-is-resource-name", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = f.client.get(format!("{vbase}/tools?go-get=1")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
