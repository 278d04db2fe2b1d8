//! `/api/v2.0`: Harbor's REST API, so that Harbor's clients and scripts work.
//!
//! Every route is declared once in [`routes`]; the router, the OpenAPI
//! document and the authorization-table test all read that list.

mod handlers;
mod replication;
mod session;
mod webhooks;

use std::collections::HashMap;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, head, patch, post, put, MethodRouter};
use axum::Router;
use berth_core::auth::{project_perms, Perm, Perms, Subject};
use berth_core::Error;
use berth_db::ProjectRow;

use crate::AppState;

pub const PREFIX: &str = "/api/v2.0";
pub const SESSION_COOKIE: &str = "sid";
pub const CSRF_HEADER: &str = "x-harbor-csrf-token";

/// The value of the `sid` cookie, if the request carries one.
pub fn session_cookie(h: &HeaderMap) -> Option<String> {
    cookie(h, SESSION_COOKIE)
}

/// The value of cookie `name` in a request's headers.
pub fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Who may call a route. The authorization table test checks every route
/// against what each kind of caller gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// No credentials needed.
    Anyone,
    /// Any signed-in user or robot.
    SignedIn,
    /// A signed-in user (not a robot).
    User,
    /// A system administrator.
    Sysadmin,
    /// A permission in the project named in the path.
    Project(Perm),
    /// Administrators, or the user the path names.
    SelfOrSysadmin,
    /// Robot accounts: administrators, or robot managers of the robot's project.
    RobotManager,
    /// A permission in the project of the retention policy in the path (or,
    /// when creating one, in the body).
    PolicyProject(Perm),
}

pub struct RouteInfo {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub need: Need,
}

/// Every API route: method, path, what it does, who may call it.
pub fn routes() -> Vec<(RouteInfo, MethodRouter<AppState>)> {
    use handlers as h;
    use replication as rp;
    use webhooks as wh;
    use Need::*;
    let r = |method: Method, path: &'static str, summary: &'static str, need: Need, mr: MethodRouter<AppState>| {
        (
            RouteInfo {
                method,
                path,
                summary,
                need,
            },
            mr,
        )
    };
    vec![
        r(
            Method::GET,
            "/health",
            "Health of each component",
            Anyone,
            get(h::health),
        ),
        r(Method::GET, "/ping", "Liveness", Anyone, get(h::ping)),
        r(
            Method::GET,
            "/systeminfo",
            "General system information",
            Anyone,
            get(h::systeminfo),
        ),
        r(
            Method::GET,
            "/users/current",
            "The signed-in user",
            SignedIn,
            get(h::current_user),
        ),
        r(Method::GET, "/users", "List users", Sysadmin, get(h::list_users)),
        r(Method::POST, "/users", "Create a user", Sysadmin, post(h::create_user)),
        r(
            Method::GET,
            "/users/{user_id}",
            "Get a user",
            SelfOrSysadmin,
            get(h::get_user),
        ),
        r(
            Method::PUT,
            "/users/{user_id}",
            "Update a user's profile",
            SelfOrSysadmin,
            put(h::update_user),
        ),
        r(
            Method::DELETE,
            "/users/{user_id}",
            "Delete a user",
            Sysadmin,
            delete(h::delete_user),
        ),
        r(
            Method::PUT,
            "/users/{user_id}/password",
            "Change a password",
            SelfOrSysadmin,
            put(h::change_password),
        ),
        r(
            Method::PUT,
            "/users/{user_id}/sysadmin",
            "Grant or revoke administration",
            Sysadmin,
            put(h::set_sysadmin),
        ),
        r(
            Method::GET,
            "/projects",
            "List the projects the caller can see",
            Anyone,
            get(h::list_projects),
        ),
        r(
            Method::HEAD,
            "/projects",
            "Whether a project name exists",
            Anyone,
            head(h::head_project),
        ),
        r(
            Method::POST,
            "/projects",
            "Create a project",
            User,
            post(h::create_project),
        ),
        r(
            Method::GET,
            "/projects/{project}",
            "Get a project",
            Project(Perm::ReadProject),
            get(h::get_project),
        ),
        r(
            Method::PUT,
            "/projects/{project}",
            "Update a project",
            Project(Perm::UpdateProject),
            put(h::update_project),
        ),
        r(
            Method::DELETE,
            "/projects/{project}",
            "Delete an empty project",
            Project(Perm::DeleteProject),
            delete(h::delete_project),
        ),
        r(
            Method::GET,
            "/projects/{project}/summary",
            "Counts of a project",
            Project(Perm::ReadProject),
            get(h::project_summary),
        ),
        r(
            Method::GET,
            "/projects/{project}/metadatas",
            "A project's metadata",
            Project(Perm::ReadProject),
            get(h::get_metadatas),
        ),
        r(
            Method::PUT,
            "/projects/{project}/metadatas/{meta_name}",
            "Set a metadata value",
            Project(Perm::UpdateProject),
            put(h::put_metadata),
        ),
        r(
            Method::GET,
            "/projects/{project}/members",
            "List members",
            Project(Perm::ListMembers),
            get(h::list_members),
        ),
        r(
            Method::POST,
            "/projects/{project}/members",
            "Add a member",
            Project(Perm::ManageMembers),
            post(h::add_member),
        ),
        r(
            Method::GET,
            "/projects/{project}/members/{mid}",
            "Get a member",
            Project(Perm::ListMembers),
            get(h::get_member),
        ),
        r(
            Method::PUT,
            "/projects/{project}/members/{mid}",
            "Change a member's role",
            Project(Perm::ManageMembers),
            put(h::update_member),
        ),
        r(
            Method::DELETE,
            "/projects/{project}/members/{mid}",
            "Remove a member",
            Project(Perm::ManageMembers),
            delete(h::remove_member),
        ),
        r(
            Method::GET,
            "/projects/{project}/logs",
            "A project's audit log",
            Project(Perm::ListLogs),
            get(h::project_logs),
        ),
        r(
            Method::GET,
            "/projects/{project}/repositories",
            "List repositories",
            Project(Perm::ListRepositories),
            get(h::list_repositories),
        ),
        r(
            Method::GET,
            "/projects/{project}/repositories/{repo}",
            "Get a repository",
            Project(Perm::ListRepositories),
            get(h::get_repository),
        ),
        r(
            Method::DELETE,
            "/projects/{project}/repositories/{repo}",
            "Delete a repository",
            Project(Perm::Delete),
            delete(h::delete_repository),
        ),
        r(
            Method::GET,
            "/projects/{project}/repositories/{repo}/artifacts",
            "List artifacts",
            Project(Perm::Pull),
            get(h::list_artifacts),
        ),
        r(
            Method::GET,
            "/projects/{project}/repositories/{repo}/artifacts/{reference}",
            "Get an artifact",
            Project(Perm::Pull),
            get(h::get_artifact),
        ),
        r(
            Method::DELETE,
            "/projects/{project}/repositories/{repo}/artifacts/{reference}",
            "Delete an artifact",
            Project(Perm::Delete),
            delete(h::delete_artifact),
        ),
        r(
            Method::GET,
            "/projects/{project}/repositories/{repo}/artifacts/{reference}/tags",
            "List an artifact's tags",
            Project(Perm::Pull),
            get(h::list_tags),
        ),
        r(
            Method::POST,
            "/projects/{project}/repositories/{repo}/artifacts/{reference}/tags",
            "Tag an artifact",
            Project(Perm::CreateTag),
            post(h::create_tag),
        ),
        r(
            Method::DELETE,
            "/projects/{project}/repositories/{repo}/artifacts/{reference}/tags/{tag}",
            "Delete a tag",
            Project(Perm::DeleteTag),
            delete(h::delete_tag),
        ),
        r(
            Method::GET,
            "/projects/{project}/vanity-paths",
            "Go vanity import paths of a project",
            Project(Perm::ReadProject),
            get(h::list_vanity),
        ),
        r(
            Method::POST,
            "/projects/{project}/vanity-paths",
            "Add a Go vanity import path",
            Project(Perm::UpdateProject),
            post(h::create_vanity),
        ),
        r(
            Method::DELETE,
            "/projects/{project}/vanity-paths/{vanity_id}",
            "Remove a Go vanity import path",
            Project(Perm::UpdateProject),
            delete(h::delete_vanity),
        ),
        r(
            Method::GET,
            "/repositories",
            "Repositories of every project the caller can see",
            Anyone,
            get(h::all_repositories),
        ),
        r(
            Method::GET,
            "/audit-logs",
            "The audit log",
            Sysadmin,
            get(h::audit_logs),
        ),
        r(
            Method::GET,
            "/robots",
            "List robot accounts",
            RobotManager,
            get(h::list_robots),
        ),
        r(
            Method::POST,
            "/robots",
            "Create a robot account",
            RobotManager,
            post(h::create_robot),
        ),
        r(
            Method::GET,
            "/robots/{robot_id}",
            "Get a robot account",
            RobotManager,
            get(h::get_robot),
        ),
        r(
            Method::PUT,
            "/robots/{robot_id}",
            "Update a robot account",
            RobotManager,
            put(h::update_robot),
        ),
        r(
            Method::PATCH,
            "/robots/{robot_id}",
            "Rotate a robot's secret",
            RobotManager,
            patch(h::refresh_robot),
        ),
        r(
            Method::DELETE,
            "/robots/{robot_id}",
            "Delete a robot account",
            RobotManager,
            delete(h::delete_robot),
        ),
        r(
            Method::GET,
            "/configurations",
            "System settings",
            Sysadmin,
            get(h::get_configurations),
        ),
        r(
            Method::PUT,
            "/configurations",
            "Change system settings",
            Sysadmin,
            put(h::put_configurations),
        ),
        r(
            Method::POST,
            "/system/gc/schedule",
            "Start a garbage collection (schedule type Manual)",
            Sysadmin,
            post(h::start_gc),
        ),
        r(
            Method::PUT,
            "/system/gc/schedule",
            "Set or remove the periodic garbage collection",
            Sysadmin,
            put(h::put_gc_schedule),
        ),
        r(
            Method::GET,
            "/system/gc/schedule",
            "The periodic garbage collection",
            Sysadmin,
            get(h::get_gc_schedule),
        ),
        r(
            Method::GET,
            "/system/gc",
            "Garbage collections, newest first",
            Sysadmin,
            get(h::list_gc),
        ),
        r(
            Method::GET,
            "/system/gc/{gc_id}",
            "One garbage collection, with its progress",
            Sysadmin,
            get(h::get_gc),
        ),
        r(
            Method::GET,
            "/system/gc/{gc_id}/log",
            "A garbage collection's log",
            Sysadmin,
            get(h::get_gc_log),
        ),
        r(
            Method::POST,
            "/system/scrub",
            "Start a scrub: read back and re-hash everything stored",
            Sysadmin,
            post(h::start_scrub),
        ),
        r(
            Method::GET,
            "/system/scrub",
            "Scrubs, newest first",
            Sysadmin,
            get(h::list_scrubs),
        ),
        r(
            Method::GET,
            "/system/scrub/{scrub_id}",
            "A scrub, its findings and log",
            Sysadmin,
            get(h::get_scrub),
        ),
        r(
            Method::GET,
            "/projects/{project}/immutabletagrules",
            "Tag immutability rules of a project",
            Project(Perm::ReadProject),
            get(h::list_immutable_rules),
        ),
        r(
            Method::POST,
            "/projects/{project}/immutabletagrules",
            "Add a tag immutability rule",
            Project(Perm::UpdateProject),
            post(h::create_immutable_rule),
        ),
        r(
            Method::PUT,
            "/projects/{project}/immutabletagrules/{immutable_rule_id}",
            "Change or disable a tag immutability rule",
            Project(Perm::UpdateProject),
            put(h::update_immutable_rule),
        ),
        r(
            Method::DELETE,
            "/projects/{project}/immutabletagrules/{immutable_rule_id}",
            "Remove a tag immutability rule",
            Project(Perm::UpdateProject),
            delete(h::delete_immutable_rule),
        ),
        r(
            Method::GET,
            "/quotas",
            "Project quotas and usage",
            Sysadmin,
            get(h::list_quotas),
        ),
        r(
            Method::GET,
            "/quotas/{quota_id}",
            "A project's quota and usage",
            Sysadmin,
            get(h::get_quota),
        ),
        r(
            Method::PUT,
            "/quotas/{quota_id}",
            "Change a project's limits",
            Sysadmin,
            put(h::update_quota),
        ),
        r(
            Method::GET,
            "/retentions/metadatas",
            "Retention rule templates and selectors",
            SignedIn,
            get(h::retention_metadatas),
        ),
        r(
            Method::POST,
            "/retentions",
            "Create a project's retention policy",
            PolicyProject(Perm::UpdateProject),
            post(h::create_retention),
        ),
        r(
            Method::GET,
            "/retentions/{retention_id}",
            "A retention policy",
            PolicyProject(Perm::ReadProject),
            get(h::get_retention),
        ),
        r(
            Method::PUT,
            "/retentions/{retention_id}",
            "Change a retention policy",
            PolicyProject(Perm::UpdateProject),
            put(h::update_retention),
        ),
        r(
            Method::DELETE,
            "/retentions/{retention_id}",
            "Delete a retention policy",
            PolicyProject(Perm::UpdateProject),
            delete(h::delete_retention),
        ),
        r(
            Method::POST,
            "/retentions/{retention_id}/executions",
            "Run a retention policy (or a dry run)",
            PolicyProject(Perm::UpdateProject),
            post(h::start_retention),
        ),
        r(
            Method::GET,
            "/retentions/{retention_id}/executions",
            "Runs of a retention policy",
            PolicyProject(Perm::ReadProject),
            get(h::list_retention_executions),
        ),
        r(
            Method::GET,
            "/retentions/{retention_id}/executions/{execution_id}/tasks",
            "What a run did in each repository",
            PolicyProject(Perm::ReadProject),
            get(h::list_retention_tasks),
        ),
        r(
            Method::GET,
            "/retentions/{retention_id}/executions/{execution_id}/tasks/{task_id}",
            "A run's log",
            PolicyProject(Perm::ReadProject),
            get(h::get_retention_task_log),
        ),
        r(
            Method::GET,
            "/registries",
            "Remote registries",
            Sysadmin,
            get(rp::list_registries),
        ),
        r(
            Method::POST,
            "/registries",
            "Add a remote registry (its password is stored sealed)",
            Sysadmin,
            post(rp::create_registry),
        ),
        r(
            Method::POST,
            "/registries/ping",
            "Check that a registry answers with its credentials",
            Sysadmin,
            post(rp::ping_registry),
        ),
        r(
            Method::GET,
            "/registries/{registry_id}",
            "A remote registry and its health",
            Sysadmin,
            get(rp::get_registry),
        ),
        r(
            Method::PUT,
            "/registries/{registry_id}",
            "Change a remote registry",
            Sysadmin,
            put(rp::update_registry),
        ),
        r(
            Method::DELETE,
            "/registries/{registry_id}",
            "Remove a remote registry no policy uses",
            Sysadmin,
            delete(rp::delete_registry),
        ),
        r(
            Method::GET,
            "/replication/adapters",
            "Registry types replication supports",
            Sysadmin,
            get(rp::registry_adapters),
        ),
        r(
            Method::GET,
            "/replication/policies",
            "Replication policies",
            Sysadmin,
            get(rp::list_policies),
        ),
        r(
            Method::POST,
            "/replication/policies",
            "Create a replication policy",
            Sysadmin,
            post(rp::create_policy),
        ),
        r(
            Method::GET,
            "/replication/policies/{policy_id}",
            "A replication policy",
            Sysadmin,
            get(rp::get_policy),
        ),
        r(
            Method::PUT,
            "/replication/policies/{policy_id}",
            "Change a replication policy",
            Sysadmin,
            put(rp::update_policy),
        ),
        r(
            Method::DELETE,
            "/replication/policies/{policy_id}",
            "Delete a replication policy",
            Sysadmin,
            delete(rp::delete_policy),
        ),
        r(
            Method::POST,
            "/replication/executions",
            "Run a replication policy now",
            Sysadmin,
            post(rp::start_execution),
        ),
        r(
            Method::GET,
            "/replication/executions",
            "Replication runs, newest first",
            Sysadmin,
            get(rp::list_executions),
        ),
        r(
            Method::GET,
            "/replication/executions/{execution_id}",
            "A replication run and its counts",
            Sysadmin,
            get(rp::get_execution),
        ),
        r(
            Method::PUT,
            "/replication/executions/{execution_id}",
            "Stop a replication run",
            Sysadmin,
            put(rp::stop_execution),
        ),
        r(
            Method::GET,
            "/projects/{project}/webhook/policies",
            "Webhook policies of a project",
            Project(Perm::UpdateProject),
            get(wh::list_policies),
        ),
        r(
            Method::POST,
            "/projects/{project}/webhook/policies",
            "Add a webhook policy: events, targets, payload format, secret",
            Project(Perm::UpdateProject),
            post(wh::create_policy),
        ),
        r(
            Method::GET,
            "/projects/{project}/webhook/policies/{webhook_policy_id}",
            "A webhook policy (secrets are not shown)",
            Project(Perm::UpdateProject),
            get(wh::get_policy),
        ),
        r(
            Method::PUT,
            "/projects/{project}/webhook/policies/{webhook_policy_id}",
            "Change or disable a webhook policy",
            Project(Perm::UpdateProject),
            put(wh::update_policy),
        ),
        r(
            Method::DELETE,
            "/projects/{project}/webhook/policies/{webhook_policy_id}",
            "Remove a webhook policy",
            Project(Perm::UpdateProject),
            delete(wh::delete_policy),
        ),
        r(
            Method::GET,
            "/projects/{project}/webhook/events",
            "Event types and payload formats webhooks can send",
            Project(Perm::UpdateProject),
            get(wh::events),
        ),
        r(
            Method::GET,
            "/projects/{project}/webhook/policies/{webhook_policy_id}/executions",
            "Deliveries of a webhook policy, newest first",
            Project(Perm::UpdateProject),
            get(wh::executions),
        ),
        r(
            Method::GET,
            "/projects/{project}/webhook/policies/{webhook_policy_id}/executions/{execution_id}/tasks",
            "A delivery's task: the request it sends",
            Project(Perm::UpdateProject),
            get(wh::tasks),
        ),
        r(
            Method::GET,
            "/projects/{project}/webhook/policies/{webhook_policy_id}/executions/{execution_id}/tasks/{task_id}/log",
            "Every attempt of a delivery and the answer it got",
            Project(Perm::UpdateProject),
            get(wh::task_log),
        ),
        r(
            Method::GET,
            "/replication/executions/{execution_id}/log",
            "A replication run's log",
            Sysadmin,
            get(rp::execution_log),
        ),
        r(
            Method::GET,
            "/replication/executions/{execution_id}/tasks",
            "What a run did, artifact by artifact",
            Sysadmin,
            get(rp::list_tasks),
        ),
        r(
            Method::GET,
            "/replication/executions/{execution_id}/tasks/{task_id}/log",
            "One task's log",
            Sysadmin,
            get(rp::task_log),
        ),
        r(
            Method::GET,
            "/openapi.json",
            "This API, as OpenAPI 3",
            Anyone,
            get(h::openapi),
        ),
    ]
}

pub fn router() -> Router<AppState> {
    let mut r = Router::new()
        .route("/c/login", post(session::login))
        .route("/c/log_out", get(session::logout).post(session::logout));

    for (info, mr) in routes() {
        r = r.route(&format!("{PREFIX}{}", info.path), mr);
    }
    r
}

/// A Harbor-style error: `{"errors":[{"code":"NOT_FOUND","message":"..."}]}`.
#[derive(Debug)]
pub struct ApiErr {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiErr {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiErr {
        let code = match status.as_u16() {
            400 => "BAD_REQUEST",
            401 => "UNAUTHORIZED",
            403 => "FORBIDDEN",
            404 => "NOT_FOUND",
            409 => "CONFLICT",
            412 => "PRECONDITION",
            429 => "TOO_MANY_REQUESTS",
            _ => "INTERNAL_SERVER_ERROR",
        };
        ApiErr {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad(m: impl Into<String>) -> ApiErr {
        ApiErr::new(StatusCode::BAD_REQUEST, m)
    }

    pub fn not_found(m: impl Into<String>) -> ApiErr {
        ApiErr::new(StatusCode::NOT_FOUND, m)
    }

    /// 401 for anonymous callers, 403 for signed-in ones.
    pub fn refused(who: &Subject) -> ApiErr {
        match who {
            Subject::Anonymous => ApiErr::new(StatusCode::UNAUTHORIZED, "sign in first"),
            _ => ApiErr::new(StatusCode::FORBIDDEN, "the caller is not allowed to do this"),
        }
    }
}

impl From<Error> for ApiErr {
    fn from(e: Error) -> ApiErr {
        let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiErr::new(status, e.message)
    }
}

impl From<berth_db::DbError> for ApiErr {
    fn from(e: berth_db::DbError) -> ApiErr {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"errors": [{"code": self.code, "message": self.message}]});
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                crate::response::header("Basic realm=\"berth\""),
            );
        }
        r
    }
}

pub type ApiResult<T = Response> = Result<T, ApiErr>;

/// The caller of an API request, from Basic credentials (users and robots).
pub struct Caller(pub Subject);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Caller, ApiErr> {
        let accounts = st
            .accounts
            .as_ref()
            .ok_or_else(|| ApiErr::not_found("accounts are not enabled"))?;
        if let Some((user, pass)) = crate::token::basic_credentials(&parts.headers) {
            return Ok(Caller(accounts.login(&user, &pass).await?));
        }
        // A browser session: its cookie, and for anything that changes state
        // the CSRF token it was given, which another site cannot read.
        let Some(sid) = session_cookie(&parts.headers) else {
            return Ok(Caller(Subject::Anonymous));
        };
        let Some((who, csrf)) = accounts.session(&sid).await? else {
            return Ok(Caller(Subject::Anonymous));
        };
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !berth_core::auth::constant_time_eq(sent, &csrf) {
                return Err(ApiErr::new(StatusCode::FORBIDDEN, "CSRF token missing or invalid"));
            }
        }
        Ok(Caller(who))
    }
}

impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Option<Caller>, ApiErr> {
        <Caller as FromRequestParts<AppState>>::from_request_parts(parts, st)
            .await
            .map(Some)
    }
}

/// Harbor's paging: `page` from 1, `page_size` up to 100 (default 10).
pub struct Paging {
    pub page: i64,
    pub size: i64,
}

impl Paging {
    pub fn from(q: &HashMap<String, String>) -> ApiResult<Paging> {
        let num = |k: &str, d: i64| -> ApiResult<i64> {
            match q.get(k) {
                None => Ok(d),
                Some(v) => v
                    .parse::<i64>()
                    .map_err(|_| ApiErr::bad(format!("{k} must be a number"))),
            }
        };
        let page = num("page", 1)?;
        let size = num("page_size", 10)?;
        if page < 1 || !(1..=100).contains(&size) {
            return Err(ApiErr::bad("page starts at 1; page_size is 1 to 100"));
        }
        Ok(Paging { page, size })
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.size
    }

    /// A JSON list response with `X-Total-Count` and `Link` headers.
    pub fn respond(
        &self,
        path: &str,
        q: &HashMap<String, String>,
        items: Vec<serde_json::Value>,
        total: i64,
    ) -> Response {
        let mut r = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::Value::Array(items).to_string(),
        )
            .into_response();
        r.headers_mut()
            .insert("x-total-count", crate::response::header(total.to_string()));
        let mut links = Vec::new();
        let link = |page: i64| {
            let mut q2: Vec<(String, String)> = q
                .iter()
                .filter(|(k, _)| *k != "page" && *k != "page_size")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            q2.sort();
            let mut s = format!("{path}?page={page}&page_size={}", self.size);
            for (k, v) in q2 {
                s.push_str(&format!("&{k}={}", v.replace('&', "%26").replace(' ', "%20")));
            }
            s
        };
        if self.page > 1 {
            links.push(format!("<{}>; rel=\"prev\"", link(self.page - 1)));
        }
        if self.offset() + self.size < total {
            links.push(format!("<{}>; rel=\"next\"", link(self.page + 1)));
        }
        if !links.is_empty() {
            r.headers_mut()
                .insert(header::LINK, crate::response::header(links.join(", ")));
        }
        r
    }
}

/// Finds the project a path names (by id, or by name; `X-Is-Resource-Name`
/// forces a name) and checks that the caller holds `perm` in it.
pub async fn project_with(
    st: &AppState,
    who: &Subject,
    headers: &HeaderMap,
    name_or_id: &str,
    perm: Perm,
) -> ApiResult<(ProjectRow, Perms)> {
    let db = st.registry.db();
    let by_name = headers.get("x-is-resource-name").and_then(|v| v.to_str().ok()) == Some("true");
    let project = match name_or_id.parse::<i64>() {
        Ok(id) if !by_name => db.project_by_id(id).await?,
        _ => db.project_by_name(name_or_id).await?,
    };
    let Some(project) = project else {
        return Err(match who {
            Subject::Anonymous => ApiErr::refused(who),
            _ => ApiErr::not_found(format!("project {name_or_id} not found")),
        });
    };
    let perms = project_perms(db, who, Some(&project)).await?;
    if !perms.contains(&perm) {
        return Err(ApiErr::refused(who));
    }
    Ok((project, perms))
}
