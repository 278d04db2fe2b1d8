//! The portal shows each person what the API lets them read and does what
//! the API lets them do, no more: for every kind of caller in the
//! authorization fixture, each page is compared with the API call behind it.

mod fixture;

use fixture::{Fixture, ALL, P};
use reqwest::{Client, StatusCode};

fn no_redirects() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|kv| kv.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// Signs in through the portal's form; the session cookie, or the status.
async fn sign_in(base: &str, user: &str, password: &str) -> Result<String, StatusCode> {
    let c = no_redirects();
    let form = c.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = set_cookie(&form, "berth_login").expect("the form sets its cookie");
    let page = form.text().await.unwrap();
    let token = page
        .split("name=\"login_csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the form carries its token")
        .to_string();
    let r = c
        .post(format!("{base}/login"))
        .header("cookie", &login_cookie)
        .form(&[
            ("login_csrf", token.as_str()),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::SEE_OTHER {
        return Err(r.status());
    }
    Ok(set_cookie(&r, "sid").expect("a session cookie"))
}

/// The HTML of `page` for the session `sid`, with the escaped slashes of
/// the templates (`&#x2f;`) read back as the browser shows them.
async fn load(f: &Fixture, sid: &str, page: &str) -> String {
    no_redirects()
        .get(format!("{}{page}", f.base))
        .header("cookie", sid)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .replace("&#x2f;", "/")
}

/// Signs in as `p` and loads `page`: the session cookie and the HTML.
async fn page_as(f: &Fixture, p: P, page: &str) -> (String, String) {
    let (user, pw) = f.creds[&p].clone();
    let sid = sign_in(&f.base, &user, &pw).await.unwrap();
    let html = load(f, &sid, page).await;
    (sid, html)
}

/// The CSRF token the portal puts in a page's forms.
fn csrf_in(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn pages_follow_the_api() {
    let f = Fixture::new().await;
    let c = no_redirects();
    let digest = f.ids["digest"].clone();
    // (portal page, the API call that decides it)
    let pairs = [
        ("/projects/secret", "/api/v2.0/projects/secret"),
        (
            "/projects/secret/repos/app",
            "/api/v2.0/projects/secret/repositories/app/artifacts",
        ),
        ("/projects/secret/members", "/api/v2.0/projects/secret/members"),
        ("/projects/secret/logs", "/api/v2.0/projects/secret/logs"),
        ("/projects/secret/vanity", "/api/v2.0/projects/secret/vanity-paths"),
        ("/admin/users", "/api/v2.0/users"),
        ("/admin/system", "/api/v2.0/configurations"),
        ("/admin/audit", "/api/v2.0/audit-logs"),
        (
            "/projects/secret/policies",
            "/api/v2.0/projects/secret/immutabletagrules",
        ),
        ("/admin/jobs", "/api/v2.0/system/gc"),
        (
            "/projects/secret/webhooks",
            "/api/v2.0/projects/secret/webhook/policies",
        ),
        ("/admin/replication", "/api/v2.0/registries"),
        (
            "/admin/replication/executions/999",
            "/api/v2.0/replication/executions/999",
        ),
    ];
    for p in ALL {
        let Some((user, password)) = f.creds.get(&p).cloned() else {
            // Anonymous: every page sends them to sign in.
            for (page, _) in pairs.iter().chain(&[("/", ""), ("/projects", "")]) {
                let r = c.get(format!("{}{page}", f.base)).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page} for {p:?}");
                assert_eq!(r.headers()["location"], "/login", "{page}");
            }
            continue;
        };
        let sid = match sign_in(&f.base, &user, &password).await {
            Ok(sid) => sid,
            Err(status) => {
                // Robots have no portal sessions.
                assert!(
                    matches!(p, P::RobotReader | P::RobotWriter),
                    "{p:?} could not sign in: {status}"
                );
                assert_eq!(status, StatusCode::FORBIDDEN);
                continue;
            }
        };
        for (page, api) in pairs {
            let shown = c
                .get(format!("{}{page}", f.base))
                .header("cookie", &sid)
                .send()
                .await
                .unwrap()
                .status();
            let allowed = c
                .get(format!("{}{api}", f.base))
                .basic_auth(&user, Some(&password))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(
                shown.is_success(),
                allowed.is_success(),
                "{p:?}: {page} answered {shown}, the API {allowed}"
            );
            if !allowed.is_success() {
                assert_eq!(shown, allowed, "{p:?}: {page} refused with another status than the API");
            }
        }

        // Deleting the spare tag: the portal does it exactly when the API would.
        let csrf = csrf_in(&load(&f, &sid, "/projects/secret/repos/app").await);
        let r = c
            .post(format!("{}/projects/secret/tags/delete", f.base))
            .header("cookie", &sid)
            .form(&[
                ("csrf", csrf.as_str()),
                ("repo", "app"),
                ("digest", &digest),
                ("tag", "spare"),
            ])
            .send()
            .await
            .unwrap();
        let may = matches!(p, P::Maintainer | P::ProjectAdmin | P::Sysadmin);
        if may {
            let status = r.status();
            assert_eq!(
                status,
                StatusCode::SEE_OTHER,
                "{p:?} could not delete a tag: {}",
                r.text().await.unwrap()
            );
            // Put it back for the next caller.
            let token = f
                .token(P::Sysadmin, &["repository:secret/app:pull,push"])
                .await
                .unwrap();
            let put = f
                .client
                .put(format!("{}/v2/secret/app/manifests/spare", f.base))
                .bearer_auth(&token)
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(f.ids["manifest"].clone())
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), 201);
        } else {
            assert!(
                r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::NOT_FOUND,
                "{p:?} deleted a tag: {}",
                r.status()
            );
        }
        // Without the token, nobody can.
        let r = c
            .post(format!("{}/projects/secret/tags/delete", f.base))
            .header("cookie", &sid)
            .form(&[("repo", "app"), ("digest", digest.as_str()), ("tag", "spare")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{p:?} deleted without a CSRF token");
    }
}

#[tokio::test]
async fn pages_are_framed_by_nobody_and_run_only_berths_scripts() {
    let f = Fixture::new().await;
    let r = no_redirects().get(format!("{}/login", f.base)).send().await.unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let login = set_cookie(&r, "berth_login").unwrap();
    // A sign-in form posted without its cookie half is refused.
    let r = no_redirects()
        .post(format!("{}/login", f.base))
        .form(&[
            ("login_csrf", login.trim_start_matches("berth_login=")),
            ("username", "admin"),
            ("password", fixture::PW),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_project_admin_changes_a_members_role_in_place() {
    let f = Fixture::new().await;
    let c = no_redirects();
    let members: serde_json::Value = f
        .admin(reqwest::Method::GET, "/api/v2.0/projects/secret/members")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gu = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["entity_name"] == "gu")
        .unwrap()["id"]
        .clone();
    let role_of_gu = || async {
        let v: serde_json::Value = f
            .admin(reqwest::Method::GET, &format!("/api/v2.0/projects/secret/members/{gu}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["role_id"].as_i64().unwrap()
    };
    assert_eq!(role_of_gu().await, 3);
    let change = |sid: String, csrf: Option<String>| {
        let c = c.clone();
        let url = format!("{}/projects/secret/members/{gu}/role", f.base);
        async move {
            let mut form = vec![("role".to_string(), "2".to_string())];
            if let Some(t) = csrf {
                form.push(("csrf".into(), t));
            }
            c.post(url)
                .header("cookie", sid)
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // A guest may not, even with its own valid token.
    let (sid, page) = page_as(&f, P::Guest, "/projects/secret/members").await;
    assert!(!page.contains("member-role"), "a guest is offered the role form");
    assert_eq!(change(sid.clone(), Some(csrf_in(&page))).await, StatusCode::FORBIDDEN);
    assert_eq!(role_of_gu().await, 3);
    // The project admin may; without the CSRF token, not.
    let (sid, page) = page_as(&f, P::ProjectAdmin, "/projects/secret/members").await;
    assert!(page.contains("member-role"));
    assert_eq!(change(sid.clone(), None).await, StatusCode::FORBIDDEN);
    assert_eq!(role_of_gu().await, 3);
    assert_eq!(change(sid, Some(csrf_in(&page))).await, StatusCode::SEE_OTHER);
    assert_eq!(role_of_gu().await, 2);
}

#[tokio::test]
async fn an_admin_manages_rules_and_jobs_from_the_portal() {
    let f = Fixture::new().await;
    let c = no_redirects();
    let (user, password) = f.creds[&P::Sysadmin].clone();
    let sid = sign_in(&f.base, &user, &password).await.unwrap();
    let post = |path: &str, form: Vec<(&'static str, String)>| {
        let req = c.post(format!("{}{path}", f.base)).header("cookie", &sid).form(&form);
        async move { req.send().await.unwrap() }
    };

    let page = load(&f, &sid, "/projects/secret/policies").await;
    assert!(page.contains("Immutable tags") && page.contains("never-*"), "{page}");
    let csrf = csrf_in(&page);
    let r = post(
        "/projects/secret/policies/immutable",
        vec![
            ("csrf", csrf.clone()),
            ("repo_pattern", "app".into()),
            ("tag_pattern", "release-*".into()),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = load(&f, &sid, "/projects/secret/policies").await;
    assert!(page.contains("<code>release-*</code>"), "{page}");
    let rules: serde_json::Value = f
        .client
        .get(format!("{}/api/v2.0/projects/secret/immutabletagrules", f.base))
        .basic_auth(&user, Some(&password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag_selectors"][0]["pattern"] == "release-*")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = post(
        &format!("/projects/secret/policies/immutable/{id}/delete"),
        vec![("csrf", csrf.clone())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(!load(&f, &sid, "/projects/secret/policies")
        .await
        .contains("<code>release-*</code>"));
    // The retention policy of the fixture, with a dry run started here.
    let r = post(
        "/projects/secret/policies/retention/run",
        vec![("csrf", csrf.clone()), ("dry_run", "on".into())],
    )
    .await;
    // The fixture already has one pending: the API's conflict is shown.
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let page = load(&f, &sid, "/admin/jobs").await;
    assert!(page.contains("No collections yet."), "{page}");
    let csrf = csrf_in(&page);
    let r = post("/admin/jobs/gc", vec![("csrf", csrf.clone()), ("dry_run", "on".into())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = load(&f, &sid, "/admin/jobs").await;
    assert!(page.contains("<td>MANUAL</td><td>Pending</td>"), "{page}");
    assert!(
        page.contains("<td>admin</td>") || page.contains(&format!("<td>{user}</td>")),
        "{page}"
    );
}

#[tokio::test]
async fn an_admin_follows_replication_in_the_portal() {
    let f = Fixture::new().await;
    let c = no_redirects();
    let (user, password) = f.creds[&P::Sysadmin].clone();
    let sid = sign_in(&f.base, &user, &password).await.unwrap();
    let post = |path: &str, form: Vec<(&'static str, String)>| {
        let req = c.post(format!("{}{path}", f.base)).header("cookie", &sid).form(&form);
        async move { req.send().await.unwrap() }
    };
    // The fixture's registry and policy are listed; the password is not.
    let page = load(&f, &sid, "/admin/replication").await;
    assert!(page.contains("<code>http://127.0.0.1:9</code>"), "{page}");
    assert!(page.contains("<code>library/**</code>"), "{page}");
    assert!(!page.contains("Remote-Passw0rd"), "{page}");
    let csrf = csrf_in(&page);

    // Add a registry, check it (nothing answers there: the reason is shown), remove it.
    let r = post(
        "/admin/replication/registries",
        vec![
            ("csrf", csrf.clone()),
            ("name", "dist".into()),
            ("type", "docker-registry".into()),
            ("url", "http://127.0.0.1:9/".into()),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = load(&f, &sid, "/admin/replication").await;
    assert!(page.contains("<td>dist</td><td>docker-registry</td>"), "{page}");
    let regs: serde_json::Value = f
        .client
        .get(format!("{}/api/v2.0/registries", f.base))
        .basic_auth(&user, Some(&password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = regs.as_array().unwrap().iter().find(|r| r["name"] == "dist").unwrap()["id"].clone();
    let r = post(
        &format!("/admin/replication/registries/{id}/ping"),
        vec![("csrf", csrf.clone())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["location"].to_str().unwrap().contains("msg="),
        "the reason is shown"
    );
    // A form without the session's token is refused, and nothing is removed.
    let r = post(
        &format!("/admin/replication/registries/{id}/delete"),
        vec![("csrf", "forged".into())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post(
        &format!("/admin/replication/registries/{id}/delete"),
        vec![("csrf", csrf.clone())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(!load(&f, &sid, "/admin/replication").await.contains("<td>dist</td>"));

    // A proxy cache project from the projects page.
    let page = load(&f, &sid, "/projects").await;
    assert!(page.contains("Proxy cache of"), "{page}");
    let reg = f.ids["registry_id"].clone();
    let r = post(
        "/projects",
        vec![
            ("csrf", csrf.clone()),
            ("name", "mirror".into()),
            ("registry", reg.clone()),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = load(&f, &sid, "/projects/mirror").await;
    assert!(page.contains("<span class=\"badge\">proxy cache</span>"), "{page}");
    let got: serde_json::Value = f
        .client
        .get(format!("{}/api/v2.0/projects/mirror", f.base))
        .basic_auth(&user, Some(&password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["registry_id"].to_string(), reg, "{got}");

    // A policy from the form, then a run of it, followed on its page, and stopped.
    let reg = f.ids["registry_id"].clone();
    let r = post(
        "/admin/replication/policies",
        vec![
            ("csrf", csrf.clone()),
            ("name", "from-portal".into()),
            ("direction", "pull".into()),
            ("registry", reg),
            ("name_filter", "team/**".into()),
            ("tag_filter", "v*".into()),
            ("trigger", "manual".into()),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = load(&f, &sid, "/admin/replication").await;
    assert!(
        page.contains("<td>from-portal</td>") && page.contains("<code>team/**</code>"),
        "{page}"
    );
    let pid = f.ids["policy_id"].clone();
    let r = post(
        &format!("/admin/replication/policies/{pid}/run"),
        vec![("csrf", csrf.clone())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let run = r.headers()["location"].to_str().unwrap().to_string();
    assert!(run.starts_with("/admin/replication/executions/"), "{run}");
    let page = load(&f, &sid, &run).await;
    assert!(page.contains(": InProgress</h1>"), "{page}");
    let r = post(&format!("{run}/stop"), vec![("csrf", csrf.clone())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = load(&f, &sid, &run).await;
    assert!(page.contains(": Stopped</h1>"), "{page}");
    assert!(load(&f, &sid, "/admin/replication").await.contains("<td>Stopped</td>"));
}

#[tokio::test]
async fn a_project_admin_follows_webhook_deliveries_in_the_portal() {
    let f = Fixture::new().await;
    let c = no_redirects();
    let (user, password) = f.creds[&P::ProjectAdmin].clone();
    let sid = sign_in(&f.base, &user, &password).await.unwrap();
    let post = |path: &str, form: Vec<(&'static str, String)>| {
        let req = c.post(format!("{}{path}", f.base)).header("cookie", &sid).form(&form);
        async move { req.send().await.unwrap() }
    };
    // A push queues a delivery to the fixture's webhook; the page shows it.
    let token = f
        .token(P::Sysadmin, &["repository:secret/app:pull,push"])
        .await
        .unwrap();
    let put = f
        .client
        .put(format!("{}/v2/secret/app/manifests/hooked", f.base))
        .bearer_auth(&token)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(f.ids["manifest"].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = loop {
        let page = load(&f, &sid, "/projects/secret/webhooks").await;
        if page.contains("<td>PUSH_ARTIFACT</td>") || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        page.contains("<code>http://127.0.0.1:9/hook</code> (Default, signed)"),
        "{page}"
    );
    assert!(page.contains("<td>PUSH_ARTIFACT</td>"), "{page}");
    assert!(page.contains("<td>Pending</td>"), "{page}");
    assert!(!page.contains("Hook-Secret"), "{page}");
    let csrf = csrf_in(&page);

    // Add one from the form; a forged form changes nothing; remove it.
    let form = |csrf: String| {
        vec![
            ("csrf", csrf),
            ("name", "chat".into()),
            ("address", "https://chat.example.test/in".into()),
            ("payload_format", "CloudEvents".into()),
            ("event_DELETE_ARTIFACT", "on".into()),
            ("auth_header", "Bearer Chat-Token".into()),
        ]
    };
    assert_eq!(
        post("/projects/secret/webhooks", form("forged".into())).await.status(),
        StatusCode::FORBIDDEN
    );
    assert!(!load(&f, &sid, "/projects/secret/webhooks").await.contains("<h3>chat"));
    let r = post("/projects/secret/webhooks", form(csrf.clone())).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = load(&f, &sid, "/projects/secret/webhooks").await;
    assert!(
        page.contains("<code>https://chat.example.test/in</code> (CloudEvents, with an Authorization header)"),
        "{page}"
    );
    assert!(page.contains("<code>DELETE_ARTIFACT</code>"), "{page}");
    assert!(!page.contains("Chat-Token"), "{page}");
    let hooks: serde_json::Value = f
        .client
        .get(format!("{}/api/v2.0/projects/secret/webhook/policies", f.base))
        .basic_auth(&user, Some(&password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = hooks.as_array().unwrap().iter().find(|h| h["name"] == "chat").unwrap()["id"].clone();
    let r = post(&format!("/projects/secret/webhooks/{id}/delete"), vec![("csrf", csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(!load(&f, &sid, "/projects/secret/webhooks")
        .await
        .contains("chat.example.test"));
}
