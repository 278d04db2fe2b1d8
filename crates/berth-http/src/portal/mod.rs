//! The web portal: pages rendered on the server from templates compiled into
//! the binary. Reading works without JavaScript; `berth.js` only adds copy
//! buttons and confirmations.
//!
//! The portal is a client of the Harbor API, in process: every page asks
//! `/api/v2.0` for what it shows, and every form becomes one API call made
//! with the visitor's own session. So the portal can show or do nothing that
//! the API would not allow that person, and the API's authorization table
//! covers the portal too. Forms carry the session's CSRF token, which is
//! passed on as the API's CSRF header: a form without it is refused by the
//! same check that guards the API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use berth_core::auth::{constant_time_eq, random_secret, Subject};
use minijinja::Environment;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::{cookie, session_cookie, CSRF_HEADER, SESSION_COOKIE};
use crate::response::header as hv;
use crate::AppState;

/// The cookie that guards the sign-in form before there is a session.
const LOGIN_COOKIE: &str = "berth_login";

type Fields = HashMap<String, String>;

#[derive(Clone)]
pub struct Portal {
    st: AppState,
    api: Router,
    env: Arc<Environment<'static>>,
}

macro_rules! templates {
    ($env:ident, $($name:literal),* $(,)?) => {
        $( $env.add_template($name, include_str!(concat!("templates/", $name))).expect($name); )*
    };
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    templates!(
        env,
        "base.html",
        "login.html",
        "error.html",
        "dashboard.html",
        "projects.html",
        "project.html",
        "repository.html",
        "members.html",
        "robots.html",
        "settings.html",
        "logs.html",
        "vanity.html",
        "users.html",
        "system.html",
        "audit.html",
        "password.html",
        "policies.html",
        "jobs.html",
        "replication.html",
        "execution.html",
        "webhooks.html",
    );
    env.add_filter("size", |n: i64| human_size(n));
    env.add_filter("short", |d: String| {
        let hex = d.split_once(':').map(|x| x.1).unwrap_or(&d);
        hex.chars().take(12).collect::<String>()
    });
    env.add_filter("when", |t: String| {
        t.replace('T', " ").trim_end_matches('Z').to_string()
    });
    env
}

pub fn human_size(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// The portal's routes, to be merged beside the API and the registry.
pub fn router(st: AppState) -> Router {
    let portal = Portal {
        api: crate::api::router().with_state(st.clone()),
        st,
        env: Arc::new(environment()),
    };
    Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/projects", get(projects).post(create_project))
        .route("/projects/{p}", get(project))
        .route("/projects/{p}/delete", post(delete_project))
        .route("/projects/{p}/repos/{*repo}", get(repository))
        .route("/projects/{p}/artifacts/delete", post(delete_artifact))
        .route("/projects/{p}/tags/delete", post(delete_tag))
        .route("/projects/{p}/members", get(members).post(add_member))
        .route("/projects/{p}/members/{mid}/delete", post(remove_member))
        .route("/projects/{p}/members/{mid}/role", post(change_role))
        .route("/projects/{p}/robots", get(robots).post(create_robot))
        .route("/projects/{p}/robots/{id}/delete", post(delete_robot))
        .route("/projects/{p}/settings", get(settings).post(save_settings))
        .route("/projects/{p}/logs", get(logs))
        .route("/projects/{p}/vanity", get(vanity).post(add_vanity))
        .route("/projects/{p}/vanity/{id}/delete", post(delete_vanity))
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/system", get(system).post(save_system))
        .route("/admin/jobs", get(jobs))
        .route("/admin/jobs/gc", post(start_gc))
        .route("/admin/jobs/scrub", post(start_scrub))
        .route("/admin/replication", get(replication))
        .route("/admin/replication/registries", post(add_registry))
        .route("/admin/replication/registries/{id}/ping", post(ping_registry))
        .route("/admin/replication/registries/{id}/delete", post(delete_registry))
        .route("/admin/replication/policies", post(add_policy))
        .route("/admin/replication/policies/{id}/run", post(run_policy))
        .route("/admin/replication/policies/{id}/delete", post(delete_policy))
        .route("/admin/replication/executions/{id}", get(execution))
        .route("/admin/replication/executions/{id}/stop", post(stop_execution))
        .route("/projects/{p}/webhooks", get(webhooks).post(add_webhook))
        .route("/projects/{p}/webhooks/{id}/delete", post(delete_webhook))
        .route("/projects/{p}/policies", get(policies))
        .route("/projects/{p}/policies/immutable", post(add_immutable))
        .route("/projects/{p}/policies/immutable/{id}/delete", post(delete_immutable))
        .route("/projects/{p}/policies/retention/run", post(run_retention))
        .route("/admin/audit", get(audit))
        .route("/account/password", get(password_form).post(change_password))
        .route(
            "/static/berth.css",
            get(|| asset("text/css", include_str!("static/berth.css"))),
        )
        .route(
            "/static/berth.js",
            get(|| asset("text/javascript", include_str!("static/berth.js"))),
        )
        .with_state(portal)
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")],
        body,
    )
        .into_response()
}

/// Who is asking, and what their forms must carry.
struct Visitor {
    headers: HeaderMap,
    sid: Option<String>,
    who: Subject,
    csrf: String,
}

impl Visitor {
    fn signed_in(&self) -> bool {
        !matches!(self.who, Subject::Anonymous)
    }
}

/// An answer of the API: status and JSON body (Null when empty).
struct Reply {
    status: StatusCode,
    body: Value,
    headers: HeaderMap,
    /// The body as text when it was not JSON.
    text: Option<String>,
}

impl Reply {
    fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error message, for showing.
    fn message(&self) -> String {
        self.body["errors"][0]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.status.to_string())
    }

    fn items(&self) -> Vec<Value> {
        self.body.as_array().cloned().unwrap_or_default()
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A repository's name inside its project as the API's path wants it:
/// slashes encoded twice, as Harbor's portal does.
fn api_repo(rel: &str) -> String {
    rel.split('/').map(enc).collect::<Vec<_>>().join("%252F")
}

impl Portal {
    async fn visitor(&self, headers: &HeaderMap) -> Result<Visitor, Response> {
        let sid = session_cookie(headers);
        let (who, csrf) = match (&sid, &self.st.accounts) {
            (Some(sid), Some(a)) => match a.session(sid).await {
                Ok(Some((who, csrf))) => (who, csrf),
                Ok(None) => (Subject::Anonymous, String::new()),
                Err(e) => {
                    return Err(self.error(
                        None,
                        StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        &e.message,
                    ))
                }
            },
            _ => (Subject::Anonymous, String::new()),
        };
        Ok(Visitor {
            headers: headers.clone(),
            sid,
            who,
            csrf,
        })
    }

    /// Calls the API as the visitor. `csrf` is what the visitor's form sent.
    async fn call(&self, v: &Visitor, method: Method, path: &str, body: Option<Value>, csrf: Option<&str>) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", crate::api::PREFIX));
        for name in [header::HOST, header::USER_AGENT] {
            if let Some(h) = v.headers.get(&name) {
                b = b.header(name, h);
            }
        }
        if let Some(h) = v.headers.get(crate::forwarded::SCHEME_HEADER) {
            b = b.header(crate::forwarded::SCHEME_HEADER, h);
        }
        if let Some(sid) = &v.sid {
            b = b.header(header::COOKIE, format!("{SESSION_COOKIE}={sid}"));
        }
        if let Some(c) = csrf {
            b = b.header(CSRF_HEADER, c);
        }
        let req = match body {
            Some(j) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(j.to_string())),
            None => b.body(Body::empty()),
        }
        .expect("valid request");
        let resp = self.api.clone().oneshot(req).await.expect("routers are infallible");
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = (body.is_null() && parts.status.is_success()).then(|| String::from_utf8_lossy(&bytes).into_owned());
        Reply {
            status: parts.status,
            body,
            headers: parts.headers,
            text,
        }
    }

    /// A form's one API call, then back to `to` saying `done`; or the
    /// API's refusal, shown.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        v: &Visitor,
        method: Method,
        path: &str,
        body: Option<Value>,
        f: &Fields,
        to: &str,
        done: &str,
    ) -> Response {
        let r = self.call(v, method, path, body, csrf_of(f)).await;
        if !r.ok() {
            return self.failed(v, &r);
        }
        see_other_with(to, done)
    }

    async fn get(&self, v: &Visitor, path: &str) -> Reply {
        self.call(v, Method::GET, path, None, None).await
    }

    /// A plain-text answer of the API (a log), or nothing.
    async fn call_text(&self, v: &Visitor, path: &str) -> String {
        let r = self.call(v, Method::GET, path, None, None).await;
        r.text.unwrap_or_default()
    }

    fn render(&self, v: Option<&Visitor>, name: &str, status: StatusCode, mut ctx: Value) -> Response {
        if let (Some(v), Value::Object(m)) = (v, &mut ctx) {
            m.insert("csrf".into(), json!(v.csrf));
            m.insert(
                "user".into(),
                match &v.who {
                    Subject::Anonymous => Value::Null,
                    w => json!({"name": w.name(), "admin": w.is_sysadmin()}),
                },
            );
            m.insert("host".into(), json!(self.registry_host(&v.headers)));
        }
        let (status, html) = match self.env.get_template(name).and_then(|t| t.render(&ctx)) {
            Ok(html) => (status, html),
            Err(e) => {
                tracing::error!(error = %e, template = name, "rendering a page failed");
                let text = format!(
                    "<!doctype html><p>This page could not be rendered: {}</p>",
                    escape_html(&e.to_string())
                );
                (StatusCode::INTERNAL_SERVER_ERROR, text)
            }
        };
        let mut r = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, hv("no-store"));
        h.insert("x-frame-options", hv("DENY"));
        h.insert("x-content-type-options", hv("nosniff"));
        h.insert(
            "content-security-policy",
            hv("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'"),
        );
        r
    }

    fn error(&self, v: Option<&Visitor>, status: StatusCode, message: &str) -> Response {
        self.render(
            v,
            "error.html",
            status,
            json!({"status": status.as_u16(), "reason": status.canonical_reason(), "message": message}),
        )
    }

    fn failed(&self, v: &Visitor, r: &Reply) -> Response {
        self.error(Some(v), r.status, &r.message())
    }

    /// host[:port] that docker pull commands name.
    fn registry_host(&self, h: &HeaderMap) -> String {
        let base = crate::token::external_base(&self.st, h);
        base.split_once("://").map(|x| x.1).unwrap_or(&base).to_string()
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Back to `to` with a message shown once at the top.
fn see_other_with(to: &str, msg: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    see_other(&format!("{to}{sep}msg={}", enc(msg)))
}

fn csrf_of(f: &Fields) -> Option<&str> {
    f.get("csrf").map(String::as_str)
}

/// Pages that need a signed-in visitor send others to the sign-in page.
macro_rules! visitor {
    ($p:expr, $h:expr) => {
        match $p.visitor(&$h).await {
            Ok(v) if v.signed_in() => v,
            Ok(_) => return see_other("/login"),
            Err(r) => return r,
        }
    };
}

fn flash(q: &Fields) -> Value {
    json!(q.get("msg"))
}

// ---- sign-in ----

async fn login_form(State(p): State<Portal>, h: HeaderMap, Query(q): Query<Fields>) -> Response {
    let token = random_secret(18);
    let mut r = p.render(
        None,
        "login.html",
        StatusCode::OK,
        json!({"login_csrf": token, "error": q.get("error"), "user": null}),
    );
    let secure = if crate::token::external_base(&p.st, &h).starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    r.headers_mut().insert(
        header::SET_COOKIE,
        hv(format!(
            "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict{secure}"
        )),
    );
    r
}

async fn login(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let expected = cookie(&h, LOGIN_COOKIE).unwrap_or_default();
    let sent = f.get("login_csrf").map(String::as_str).unwrap_or("");
    if expected.is_empty() || !constant_time_eq(sent, &expected) {
        return p.error(None, StatusCode::FORBIDDEN, "the sign-in form expired; load it again");
    }
    let v = Visitor {
        headers: h.clone(),
        sid: None,
        who: Subject::Anonymous,
        csrf: String::new(),
    };
    let body = json!({
        "principal": f.get("username").cloned().unwrap_or_default(),
        "password": f.get("password").cloned().unwrap_or_default(),
    });
    // /c/login lives beside the API, not under it.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/c/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, h.get(header::HOST).cloned().unwrap_or(hv("localhost")));
    let req = match h.get(crate::forwarded::SCHEME_HEADER) {
        Some(s) => req.header(crate::forwarded::SCHEME_HEADER, s),
        None => req,
    };
    let resp = p
        .api
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).expect("valid request"))
        .await
        .expect("routers are infallible");
    let status = resp.status();
    if !status.is_success() {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let reply = Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers: HeaderMap::new(),
            text: None,
        };
        let token = random_secret(18);
        let mut r = p.render(
            Some(&v),
            "login.html",
            status,
            json!({"login_csrf": token, "error": reply.message()}),
        );
        r.headers_mut().insert(
            header::SET_COOKIE,
            hv(format!(
                "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict"
            )),
        );
        return r;
    }
    let mut r = see_other("/");
    if let Some(c) = resp.headers().get(header::SET_COOKIE) {
        r.headers_mut().insert(header::SET_COOKIE, c.clone());
    }
    r
}

async fn logout(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    if !constant_time_eq(csrf_of(&f).unwrap_or(""), &v.csrf) {
        return p.error(Some(&v), StatusCode::FORBIDDEN, "CSRF token missing or invalid");
    }
    if let (Some(a), Some(sid)) = (&p.st.accounts, &v.sid) {
        if let Err(e) = a.end_session(sid).await {
            return p.error(Some(&v), StatusCode::SERVICE_UNAVAILABLE, &e.message);
        }
    }
    let mut r = see_other("/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        hv(format!("{SESSION_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax")),
    );
    r
}

// ---- dashboard and projects ----

/// Projects the visitor can see, each with its summary (repositories, bytes).
async fn project_list(p: &Portal, v: &Visitor, filter: Option<&str>) -> Result<Vec<Value>, Response> {
    let mut path = "/projects?page_size=100".to_string();
    if let Some(f) = filter.filter(|f| !f.is_empty()) {
        path.push_str(&format!("&name={}", enc(f)));
    }
    let r = p.get(v, &path).await;
    if !r.ok() {
        return Err(p.failed(v, &r));
    }
    let mut out = Vec::new();
    for mut proj in r.items() {
        let name = proj["name"].as_str().unwrap_or_default().to_string();
        let s = p.get(v, &format!("/projects/{}/summary", enc(&name))).await;
        proj["storage"] = s.body["quota"]["used"]["storage"].clone();
        proj["public"] = json!(proj["metadata"]["public"] == "true");
        out.push(proj);
    }
    Ok(out)
}

async fn dashboard(State(p): State<Portal>, h: HeaderMap, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    let projects = match project_list(&p, &v, None).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let storage: i64 = projects.iter().filter_map(|x| x["storage"].as_i64()).sum();
    let repos: i64 = projects.iter().filter_map(|x| x["repo_count"].as_i64()).sum();
    let max = projects
        .iter()
        .filter_map(|x| x["storage"].as_i64())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut chart: Vec<Value> = projects
        .iter()
        .map(|x| {
            let used = x["storage"].as_i64().unwrap_or(0);
            json!({"name": x["name"], "used": used, "percent": (used as f64 * 100.0 / max as f64).round()})
        })
        .collect();
    chart.sort_by_key(|c| -c["used"].as_i64().unwrap_or(0));
    chart.truncate(12);
    let activity = if v.who.is_sysadmin() {
        p.get(&v, "/audit-logs?page_size=10").await.items()
    } else {
        vec![]
    };
    p.render(
        Some(&v),
        "dashboard.html",
        StatusCode::OK,
        json!({
            "msg": flash(&q),
            "counts": {"projects": projects.len(), "repositories": repos, "storage": storage},
            "chart": chart,
            "activity": activity,
        }),
    )
}

async fn projects(State(p): State<Portal>, h: HeaderMap, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    let filter = q.get("q").map(String::as_str);
    // Administrators may make a new project a proxy cache of a registry.
    let registries = if v.who.is_sysadmin() {
        p.get(&v, "/registries?page_size=100").await.items()
    } else {
        Vec::new()
    };
    match project_list(&p, &v, filter).await {
        Ok(list) => p.render(
            Some(&v),
            "projects.html",
            StatusCode::OK,
            json!({"projects": list, "q": filter, "msg": flash(&q), "registries": registries}),
        ),
        Err(r) => r,
    }
}

async fn create_project(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let name = f.get("name").cloned().unwrap_or_default();
    let public = f.get("public").is_some_and(|x| x == "on" || x == "true");
    let mut body = json!({"project_name": name, "metadata": {"public": public.to_string()}});
    if let Some(id) = f.get("registry").and_then(|r| r.parse::<i64>().ok()) {
        body["registry_id"] = json!(id);
    }
    p.act(
        &v,
        Method::POST,
        "/projects",
        Some(body),
        &f,
        &format!("/projects/{}", enc(&name)),
        &format!("Project {name} created."),
    )
    .await
}

/// The project and the visitor's view of it, for the tabs every project page shows.
async fn project_ctx(p: &Portal, v: &Visitor, name: &str) -> Result<Value, Response> {
    let r = p.get(v, &format!("/projects/{}", enc(name))).await;
    if !r.ok() {
        return Err(p.failed(v, &r));
    }
    let mut proj = r.body;
    let s = p.get(v, &format!("/projects/{}/summary", enc(name))).await;
    proj["storage"] = s.body["quota"]["used"]["storage"].clone();
    proj["storage_limit"] = s.body["quota"]["hard"]["storage"].clone();
    proj["quota"] = s.body["quota"].clone();
    proj["public"] = json!(proj["metadata"]["public"] == "true");
    let role = proj["current_user_role_id"].as_i64().unwrap_or(0);
    // Project admin (1) or maintainer (4) manage members and robots; the API decides in the end.
    proj["manage"] = json!(v.who.is_sysadmin() || role == 1);
    proj["maintain"] = json!(v.who.is_sysadmin() || role == 1 || role == 4);
    Ok(proj)
}

async fn project(State(p): State<Portal>, h: HeaderMap, Path(name): Path<String>, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    let proj = match project_ctx(&p, &v, &name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut path = format!("/projects/{}/repositories?page_size=100", enc(&name));
    if let Some(f) = q.get("q").filter(|f| !f.is_empty()) {
        path.push_str(&format!("&q=name%3D~{}", enc(f)));
    }
    let r = p.get(&v, &path).await;
    // A limited guest may see the project but not list its repositories.
    let refused = (r.status == StatusCode::FORBIDDEN).then(|| r.message());
    if !r.ok() && refused.is_none() {
        return p.failed(&v, &r);
    }
    let repos: Vec<Value> = r
        .items()
        .into_iter()
        .map(|mut x| {
            let full = x["name"].as_str().unwrap_or_default().to_string();
            let rel = full.strip_prefix(&format!("{name}/")).unwrap_or(&full).to_string();
            x["rel"] = json!(rel);
            x
        })
        .collect();
    p.render(
        Some(&v),
        "project.html",
        StatusCode::OK,
        json!({"project": proj, "repos": repos, "refused": refused, "tab": "repos", "q": q.get("q"), "msg": flash(&q)}),
    )
}

async fn delete_project(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    p.act(
        &v,
        Method::DELETE,
        &format!("/projects/{}", enc(&name)),
        None,
        &f,
        "/projects",
        &format!("Project {name} deleted."),
    )
    .await
}

// ---- repositories and artifacts ----

async fn repository(
    State(p): State<Portal>,
    h: HeaderMap,
    Path((name, rel)): Path<(String, String)>,
    Query(q): Query<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let proj = match project_ctx(&p, &v, &name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let path = format!(
        "/projects/{}/repositories/{}/artifacts?with_tag=true&page_size=100",
        enc(&name),
        api_repo(&rel)
    );
    let r = p.get(&v, &path).await;
    if !r.ok() {
        return p.failed(&v, &r);
    }
    p.render(
        Some(&v),
        "repository.html",
        StatusCode::OK,
        json!({"project": proj, "rel": rel, "repo": format!("{name}/{rel}"), "artifacts": r.items(), "msg": flash(&q)}),
    )
}

fn repo_page(project: &str, rel: &str) -> String {
    format!(
        "/projects/{}/repos/{}",
        enc(project),
        rel.split('/').map(enc).collect::<Vec<_>>().join("/")
    )
}

async fn delete_artifact(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let rel = f.get("repo").cloned().unwrap_or_default();
    let digest = f.get("digest").cloned().unwrap_or_default();
    let path = format!(
        "/projects/{}/repositories/{}/artifacts/{}",
        enc(&name),
        api_repo(&rel),
        enc(&digest)
    );
    p.act(
        &v,
        Method::DELETE,
        &path,
        None,
        &f,
        &repo_page(&name, &rel),
        &format!("Artifact {digest} deleted."),
    )
    .await
}

async fn delete_tag(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let rel = f.get("repo").cloned().unwrap_or_default();
    let digest = f.get("digest").cloned().unwrap_or_default();
    let tag = f.get("tag").cloned().unwrap_or_default();
    let path = format!(
        "/projects/{}/repositories/{}/artifacts/{}/tags/{}",
        enc(&name),
        api_repo(&rel),
        enc(&digest),
        enc(&tag)
    );
    p.act(
        &v,
        Method::DELETE,
        &path,
        None,
        &f,
        &repo_page(&name, &rel),
        &format!("Tag {tag} deleted."),
    )
    .await
}

// ---- members, robots, settings, logs, vanity paths ----

/// A project tab that lists what one API call returns (`path` from the project).
async fn project_tab(
    p: &Portal,
    h: &HeaderMap,
    name: &str,
    path: impl FnOnce(&Value) -> String,
    tab: &str,
    q: &Fields,
) -> Response {
    let v = visitor!(p, h);
    let proj = match project_ctx(p, &v, name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let r = p.get(&v, &path(&proj)).await;
    if !r.ok() {
        return p.failed(&v, &r);
    }
    p.render(
        Some(&v),
        &format!("{tab}.html"),
        StatusCode::OK,
        json!({"project": proj, "items": r.items(), "tab": tab, "msg": flash(q)}),
    )
}

fn robots_of(project: &Value) -> String {
    format!(
        "/robots?page_size=100&q=Level%3Dproject%2CProjectID%3D{}",
        project["project_id"]
    )
}

async fn members(State(p): State<Portal>, h: HeaderMap, Path(name): Path<String>, Query(q): Query<Fields>) -> Response {
    let path = format!("/projects/{}/members?page_size=100", enc(&name));
    project_tab(&p, &h, &name, |_| path, "members", &q).await
}

async fn add_member(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let role: i64 = f.get("role").and_then(|r| r.parse().ok()).unwrap_or(3);
    let user = f.get("username").cloned().unwrap_or_default();
    p.act(
        &v,
        Method::POST,
        &format!("/projects/{}/members", enc(&name)),
        Some(json!({"role_id": role, "member_user": {"username": user}})),
        &f,
        &format!("/projects/{}/members", enc(&name)),
        &format!("{user} added."),
    )
    .await
}

async fn change_role(
    State(p): State<Portal>,
    h: HeaderMap,
    Path((name, mid)): Path<(String, i64)>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let role: i64 = f.get("role").and_then(|r| r.parse().ok()).unwrap_or(0);
    let back = format!("/projects/{}/members", enc(&name));
    let path = format!("/projects/{}/members/{mid}", enc(&name));
    p.act(
        &v,
        Method::PUT,
        &path,
        Some(json!({"role_id": role})),
        &f,
        &back,
        "Role changed.",
    )
    .await
}

async fn remove_member(
    State(p): State<Portal>,
    h: HeaderMap,
    Path((name, mid)): Path<(String, i64)>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    p.act(
        &v,
        Method::DELETE,
        &format!("/projects/{}/members/{mid}", enc(&name)),
        None,
        &f,
        &format!("/projects/{}/members", enc(&name)),
        "Member removed.",
    )
    .await
}

async fn robots(State(p): State<Portal>, h: HeaderMap, Path(name): Path<String>, Query(q): Query<Fields>) -> Response {
    project_tab(&p, &h, &name, robots_of, "robots", &q).await
}

async fn create_robot(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let proj = match project_ctx(&p, &v, &name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut access = vec![json!({"resource": "repository", "action": "pull"})];
    if f.contains_key("push") {
        access.push(json!({"resource": "repository", "action": "push"}));
    }
    let days: i64 = f.get("days").and_then(|d| d.parse().ok()).unwrap_or(-1);
    let body = json!({
        "name": f.get("name").cloned().unwrap_or_default(),
        "description": f.get("description").cloned().unwrap_or_default(),
        "level": "project",
        "duration": days,
        "permissions": [{"kind": "project", "namespace": name, "access": access}],
    });
    let r = p.call(&v, Method::POST, "/robots", Some(body), csrf_of(&f)).await;
    if !r.ok() {
        return p.failed(&v, &r);
    }
    // The secret is shown on this answer only; it is not kept anywhere readable.
    let list = p.get(&v, &robots_of(&proj)).await;
    p.render(
        Some(&v),
        "robots.html",
        StatusCode::OK,
        json!({"project": proj, "items": list.items(), "tab": "robots", "created": r.body}),
    )
}

async fn delete_robot(
    State(p): State<Portal>,
    h: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let back = format!("/projects/{}/robots", enc(&name));
    p.act(
        &v,
        Method::DELETE,
        &format!("/robots/{id}"),
        None,
        &f,
        &back,
        "Robot account deleted.",
    )
    .await
}

async fn settings(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<Fields>,
) -> Response {
    let v = visitor!(p, h);
    match project_ctx(&p, &v, &name).await {
        Ok(proj) => p.render(
            Some(&v),
            "settings.html",
            StatusCode::OK,
            json!({"project": proj, "tab": "settings", "msg": flash(&q)}),
        ),
        Err(r) => r,
    }
}

async fn save_settings(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let public = f.get("public").is_some_and(|x| x == "on" || x == "true");
    p.act(
        &v,
        Method::PUT,
        &format!("/projects/{}", enc(&name)),
        Some(json!({"metadata": {"public": public.to_string()}})),
        &f,
        &format!("/projects/{}/settings", enc(&name)),
        "Settings saved.",
    )
    .await
}

async fn logs(State(p): State<Portal>, h: HeaderMap, Path(name): Path<String>, Query(q): Query<Fields>) -> Response {
    let path = format!("/projects/{}/logs?page_size=100", enc(&name));
    project_tab(&p, &h, &name, |_| path, "logs", &q).await
}

async fn vanity(State(p): State<Portal>, h: HeaderMap, Path(name): Path<String>, Query(q): Query<Fields>) -> Response {
    let path = format!("/projects/{}/vanity-paths", enc(&name));
    project_tab(&p, &h, &name, |_| path, "vanity", &q).await
}

async fn add_vanity(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let field = |k: &str| f.get(k).cloned().filter(|x| !x.is_empty());
    let body = json!({
        "path": field("path").unwrap_or_default(),
        "repo": field("repo").unwrap_or_default(),
        "vcs": field("vcs"),
        "display": field("display"),
    });
    p.act(
        &v,
        Method::POST,
        &format!("/projects/{}/vanity-paths", enc(&name)),
        Some(body),
        &f,
        &format!("/projects/{}/vanity", enc(&name)),
        "Import path added.",
    )
    .await
}

async fn delete_vanity(
    State(p): State<Portal>,
    h: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    p.act(
        &v,
        Method::DELETE,
        &format!("/projects/{}/vanity-paths/{id}", enc(&name)),
        None,
        &f,
        &format!("/projects/{}/vanity", enc(&name)),
        "Import path removed.",
    )
    .await
}

// ---- policies ----

async fn policies(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let proj = match project_ctx(&p, &v, &name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rules = p.get(&v, &format!("/projects/{}/immutabletagrules", enc(&name))).await;
    if !rules.ok() {
        return p.failed(&v, &rules);
    }
    let meta = p.get(&v, &format!("/projects/{}/metadatas", enc(&name))).await;
    let (retention, executions) = match meta.body["retention_id"].as_str() {
        Some(id) => {
            let r = p.get(&v, &format!("/retentions/{id}")).await;
            let e = p.get(&v, &format!("/retentions/{id}/executions?page_size=10")).await;
            (r.body, e.items())
        }
        None => (Value::Null, Vec::new()),
    };
    let quota = proj["quota"].clone();
    p.render(
        Some(&v),
        "policies.html",
        StatusCode::OK,
        json!({"project": proj, "tab": "policies", "rules": rules.items(), "quota": quota,
               "retention": retention, "executions": executions, "msg": flash(&q)}),
    )
}

async fn webhooks(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let proj = match project_ctx(&p, &v, &name).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let base = format!("/projects/{}/webhook", enc(&name));
    let list = p.get(&v, &format!("{base}/policies")).await;
    if !list.ok() {
        return p.failed(&v, &list);
    }
    let events = p.get(&v, &format!("{base}/events")).await;
    let mut hooks = Vec::new();
    for mut w in list.items() {
        let id = w["id"].clone();
        let mut deliveries = p
            .get(&v, &format!("{base}/policies/{id}/executions?page_size=10"))
            .await
            .items();
        for d in deliveries.iter_mut() {
            let log = p
                .call_text(
                    &v,
                    &format!("{base}/policies/{id}/executions/{0}/tasks/{0}/log", d["id"]),
                )
                .await;
            d["log"] = json!(log);
        }
        w["deliveries"] = json!(deliveries);
        hooks.push(w);
    }
    p.render(
        Some(&v),
        "webhooks.html",
        StatusCode::OK,
        json!({"project": proj, "tab": "webhooks", "hooks": hooks,
               "event_types": events.body["event_type"], "formats": events.body["payload_formats"][0]["formats"],
               "msg": flash(&q)}),
    )
}

async fn add_webhook(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let events: Vec<&str> = berth_core::webhook::EVENT_TYPES
        .iter()
        .copied()
        .filter(|e| f.get(&format!("event_{e}")).is_some_and(|x| x == "on"))
        .collect();
    let body = json!({
        "name": field("name"), "event_types": events,
        "targets": [{"type": "http", "address": field("address"), "payload_format": field("payload_format"),
                     "secret": field("secret"), "auth_header": field("auth_header"),
                     "skip_cert_verify": f.get("skip_cert_verify").is_some_and(|x| x == "on")}],
    });
    p.act(
        &v,
        Method::POST,
        &format!("/projects/{}/webhook/policies", enc(&name)),
        Some(body),
        &f,
        &format!("/projects/{}/webhooks", enc(&name)),
        "Webhook added.",
    )
    .await
}

async fn delete_webhook(
    State(p): State<Portal>,
    h: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    p.act(
        &v,
        Method::DELETE,
        &format!("/projects/{}/webhook/policies/{id}", enc(&name)),
        None,
        &f,
        &format!("/projects/{}/webhooks", enc(&name)),
        "Webhook removed.",
    )
    .await
}

async fn add_immutable(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let body = json!({
        "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": field("tag_pattern")}],
        "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": field("repo_pattern")}]},
    });
    p.act(
        &v,
        Method::POST,
        &format!("/projects/{}/immutabletagrules", enc(&name)),
        Some(body),
        &f,
        &format!("/projects/{}/policies", enc(&name)),
        "Rule added.",
    )
    .await
}

async fn delete_immutable(
    State(p): State<Portal>,
    h: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    p.act(
        &v,
        Method::DELETE,
        &format!("/projects/{}/immutabletagrules/{id}", enc(&name)),
        None,
        &f,
        &format!("/projects/{}/policies", enc(&name)),
        "Rule removed.",
    )
    .await
}

async fn run_retention(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    let meta = p.get(&v, &format!("/projects/{}/metadatas", enc(&name))).await;
    let Some(id) = meta.body["retention_id"].as_str().map(str::to_string) else {
        return p.error(Some(&v), StatusCode::NOT_FOUND, "this project has no retention policy");
    };
    let dry = f.get("dry_run").is_some_and(|x| x == "on" || x == "true");
    p.act(
        &v,
        Method::POST,
        &format!("/retentions/{id}/executions"),
        Some(json!({"dry_run": dry})),
        &f,
        &format!("/projects/{}/policies", enc(&name)),
        if dry {
            "Dry run started."
        } else {
            "Retention run started."
        },
    )
    .await
}

// ---- administration ----

async fn jobs(State(p): State<Portal>, h: HeaderMap, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    let gc = p.get(&v, "/system/gc?page_size=20").await;
    if !gc.ok() {
        return p.failed(&v, &gc);
    }
    let schedule = p.get(&v, "/system/gc/schedule").await;
    let scrubs = p.get(&v, "/system/scrub?page_size=10").await;
    p.render(
        Some(&v),
        "jobs.html",
        StatusCode::OK,
        json!({"gc": gc.items(), "schedule": schedule.body, "scrubs": scrubs.items(), "msg": flash(&q)}),
    )
}

async fn start_gc(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let on = |k: &str| f.get(k).is_some_and(|x| x == "on" || x == "true");
    let body = json!({"schedule": {"type": "Manual"},
                      "parameters": {"delete_untagged": on("delete_untagged"), "dry_run": on("dry_run")}});
    p.act(
        &v,
        Method::POST,
        "/system/gc/schedule",
        Some(body),
        &f,
        "/admin/jobs",
        "Garbage collection started.",
    )
    .await
}

async fn start_scrub(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    p.act(
        &v,
        Method::POST,
        "/system/scrub",
        None,
        &f,
        "/admin/jobs",
        "Scrub started.",
    )
    .await
}

async fn users(State(p): State<Portal>, h: HeaderMap, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    let r = p.get(&v, "/users?page_size=100").await;
    if !r.ok() {
        return p.failed(&v, &r);
    }
    p.render(
        Some(&v),
        "users.html",
        StatusCode::OK,
        json!({"users": r.items(), "msg": flash(&q)}),
    )
}

async fn create_user(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let body = json!({
        "username": field("username"),
        "email": field("email"),
        "realname": field("realname"),
        "password": field("password"),
    });
    p.act(
        &v,
        Method::POST,
        "/users",
        Some(body),
        &f,
        "/admin/users",
        &format!("User {} created.", field("username")),
    )
    .await
}

async fn system(State(p): State<Portal>, h: HeaderMap, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    let r = p.get(&v, "/configurations").await;
    if !r.ok() {
        return p.failed(&v, &r);
    }
    let info = p.get(&v, "/systeminfo").await;
    p.render(
        Some(&v),
        "system.html",
        StatusCode::OK,
        json!({"config": r.body, "info": info.body, "msg": flash(&q)}),
    )
}

async fn save_system(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let body = json!({"project_creation_restriction": f.get("project_creation_restriction")});
    p.act(
        &v,
        Method::PUT,
        "/configurations",
        Some(body),
        &f,
        "/admin/system",
        "Settings saved.",
    )
    .await
}

async fn audit(State(p): State<Portal>, h: HeaderMap, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    let mut filters = Vec::new();
    for (key, api) in [
        ("username", "username"),
        ("operation", "operation"),
        ("resource", "resource"),
    ] {
        if let Some(x) = q.get(key).filter(|x| !x.is_empty()) {
            let op = if key == "operation" { "=" } else { "=~" };
            filters.push(format!("{api}{op}{x}"));
        }
    }
    let mut path = "/audit-logs?page_size=100".to_string();
    if !filters.is_empty() {
        path.push_str(&format!("&q={}", enc(&filters.join(","))));
    }
    let r = p.get(&v, &path).await;
    if !r.ok() {
        return p.failed(&v, &r);
    }
    p.render(
        Some(&v),
        "audit.html",
        StatusCode::OK,
        json!({"logs": r.items(), "filter": q, "total": r.headers.get("x-total-count").and_then(|x| x.to_str().ok())}),
    )
}

async fn password_form(State(p): State<Portal>, h: HeaderMap, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    p.render(Some(&v), "password.html", StatusCode::OK, json!({"msg": flash(&q)}))
}

async fn change_password(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let Some(id) = v.who.user_id() else {
        return p.error(
            Some(&v),
            StatusCode::FORBIDDEN,
            "robot accounts have no password to change",
        );
    };
    if f.get("new_password") != f.get("confirm") {
        return p.error(Some(&v), StatusCode::BAD_REQUEST, "the new passwords differ");
    }
    let body = json!({
        "old_password": f.get("old_password").cloned().unwrap_or_default(),
        "new_password": f.get("new_password").cloned().unwrap_or_default(),
    });
    p.act(
        &v,
        Method::PUT,
        &format!("/users/{id}/password"),
        Some(body),
        &f,
        "/account/password",
        "Password changed.",
    )
    .await
}

// ---- replication ----

async fn replication(State(p): State<Portal>, h: HeaderMap, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    let registries = p.get(&v, "/registries?page_size=100").await;
    if !registries.ok() {
        return p.failed(&v, &registries);
    }
    let policies = p.get(&v, "/replication/policies?page_size=100").await;
    let executions = p.get(&v, "/replication/executions?page_size=30").await;
    let types = p.get(&v, "/replication/adapters").await;
    let names: serde_json::Map<String, Value> = policies
        .items()
        .iter()
        .map(|x| (x["id"].to_string(), x["name"].clone()))
        .collect();
    p.render(
        Some(&v),
        "replication.html",
        StatusCode::OK,
        json!({"registries": registries.items(), "policies": policies.items(), "executions": executions.items(),
               "types": types.body, "names": names, "msg": flash(&q)}),
    )
}

async fn add_registry(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let body = json!({
        "name": field("name"), "type": field("type"), "url": field("url"),
        "insecure": f.get("insecure").is_some_and(|x| x == "on"),
        "credential": {"access_key": field("access_key"), "access_secret": field("access_secret")},
    });
    p.act(
        &v,
        Method::POST,
        "/registries",
        Some(body),
        &f,
        "/admin/replication",
        "Registry added.",
    )
    .await
}

async fn ping_registry(State(p): State<Portal>, h: HeaderMap, Path(id): Path<i64>, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let r = p
        .call(
            &v,
            Method::POST,
            "/registries/ping",
            Some(json!({"id": id})),
            csrf_of(&f),
        )
        .await;
    match r.status {
        s if s.is_success() => see_other_with("/admin/replication", "The registry answers."),
        StatusCode::BAD_REQUEST => see_other_with("/admin/replication", &r.message()),
        _ => p.failed(&v, &r),
    }
}

async fn delete_registry(
    State(p): State<Portal>,
    h: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Response {
    let v = visitor!(p, h);
    p.act(
        &v,
        Method::DELETE,
        &format!("/registries/{id}"),
        None,
        &f,
        "/admin/replication",
        "Registry removed.",
    )
    .await
}

async fn add_policy(State(p): State<Portal>, h: HeaderMap, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let registry = json!({"id": field("registry").parse::<i64>().unwrap_or(0)});
    let (src, dst) = if field("direction") == "pull" {
        (registry, Value::Null)
    } else {
        (Value::Null, registry)
    };
    let body = json!({
        "name": field("name"), "src_registry": src, "dest_registry": dst,
        "dest_namespace": field("dest_namespace"),
        "filters": [{"type": "name", "value": field("name_filter")}, {"type": "tag", "value": field("tag_filter")}],
        "trigger": {"type": field("trigger"), "trigger_settings": {"cron": field("cron")}},
        "deletion": f.get("deletion").is_some_and(|x| x == "on"),
    });
    p.act(
        &v,
        Method::POST,
        "/replication/policies",
        Some(body),
        &f,
        "/admin/replication",
        "Policy added.",
    )
    .await
}

async fn run_policy(State(p): State<Portal>, h: HeaderMap, Path(id): Path<i64>, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let r = p
        .call(
            &v,
            Method::POST,
            "/replication/executions",
            Some(json!({"policy_id": id})),
            csrf_of(&f),
        )
        .await;
    match r.headers.get(header::LOCATION).and_then(|l| l.to_str().ok()) {
        Some(loc) if r.ok() || r.status == StatusCode::CONFLICT => {
            let run = loc.rsplit('/').next().unwrap_or_default();
            see_other(&format!("/admin/replication/executions/{run}"))
        }
        _ => p.failed(&v, &r),
    }
}

async fn delete_policy(State(p): State<Portal>, h: HeaderMap, Path(id): Path<i64>, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    p.act(
        &v,
        Method::DELETE,
        &format!("/replication/policies/{id}"),
        None,
        &f,
        "/admin/replication",
        "Policy deleted.",
    )
    .await
}

async fn execution(State(p): State<Portal>, h: HeaderMap, Path(id): Path<i64>, Query(q): Query<Fields>) -> Response {
    let v = visitor!(p, h);
    let e = p.get(&v, &format!("/replication/executions/{id}")).await;
    if !e.ok() {
        return p.failed(&v, &e);
    }
    let tasks = p
        .get(&v, &format!("/replication/executions/{id}/tasks?page_size=100"))
        .await;
    let policy = p
        .get(&v, &format!("/replication/policies/{}", e.body["policy_id"]))
        .await;
    let log = p.call_text(&v, &format!("/replication/executions/{id}/log")).await;
    p.render(
        Some(&v),
        "execution.html",
        StatusCode::OK,
        json!({"e": e.body, "tasks": tasks.items(), "log": log,
               "policy_name": policy.body["name"].as_str().unwrap_or("(deleted)"), "msg": flash(&q)}),
    )
}

async fn stop_execution(State(p): State<Portal>, h: HeaderMap, Path(id): Path<i64>, Form(f): Form<Fields>) -> Response {
    let v = visitor!(p, h);
    let to = format!("/admin/replication/executions/{id}");
    p.act(
        &v,
        Method::PUT,
        &format!("/replication/executions/{id}"),
        None,
        &f,
        &to,
        "Stopping.",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_repository_paths() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        assert_eq!(api_repo("a/b c"), "a%252Fb%20c");
        assert_eq!(repo_page("lib", "a/b"), "/projects/lib/repos/a/b");
    }

    #[test]
    fn every_template_parses() {
        let env = environment();
        for t in env.templates() {
            assert!(!t.0.is_empty());
        }
    }
}
