//! Handlers of `/api/v2.0`, in the order of [`super::routes`].

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_core::auth::{
    hash_password, hash_secret, password_policy, project_perms, random_secret, rfc3339, verify_password_bounded, Perm,
    RobotPermission, Role, Subject,
};
use berth_db::{AuditFilter, ManifestRow, ProjectRow, RobotRow, UserRow};
use berth_oci::{Reference, RepoName};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{project_with, routes, ApiErr, ApiResult, Caller, Paging, PREFIX};
use crate::AppState;

type Q = Query<HashMap<String, String>>;

pub(super) fn time(ms: i64) -> String {
    rfc3339(ms / 1000)
}

pub(super) fn ok_json(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub(super) fn created(location: String) -> Response {
    (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
}

pub(super) fn ok() -> Response {
    StatusCode::OK.into_response()
}

pub(super) async fn audit(st: &AppState, who: &Subject, op: &str, kind: &str, resource: &str) {
    if let Some(a) = &st.accounts {
        a.audit(who.name(), op, kind, resource, true).await;
    }
}

// ---- system ----

pub async fn health(State(st): State<AppState>) -> Response {
    let db_ok = st.registry.db().repository_id("").await.is_ok();
    let status = |ok: bool| if ok { "healthy" } else { "unhealthy" };
    let body = json!({
        "status": status(db_ok),
        "components": [
            {"name": "core", "status": "healthy"},
            {"name": "database", "status": status(db_ok)},
            {"name": "registry", "status": "healthy"},
        ]
    });
    ok_json(body)
}

pub async fn ping() -> &'static str {
    "Pong"
}

pub async fn systeminfo(State(st): State<AppState>, headers: HeaderMap) -> ApiResult {
    let creation = project_creation(&st).await?;
    let base = crate::token::external_base(&st, &headers);
    Ok(ok_json(json!({
        "auth_mode": "db_auth",
        "berth_version": env!("CARGO_PKG_VERSION"),
        "harbor_version": format!("berth-{}", env!("CARGO_PKG_VERSION")),
        "external_url": base,
        "registry_url": base.trim_start_matches("http://").trim_start_matches("https://"),
        "project_creation_restriction": creation,
        "self_registration": false,
        "has_ca_root": false,
        "read_only": false,
        "with_chartmuseum": false,
        "notification_enable": false,
    })))
}

async fn project_creation(st: &AppState) -> ApiResult<String> {
    Ok(st
        .registry
        .db()
        .setting("project_creation_restriction")
        .await?
        .unwrap_or_else(|| "everyone".into()))
}

// ---- users ----

fn user_json(u: &UserRow) -> Value {
    json!({
        "user_id": u.id,
        "username": u.username,
        "email": u.email,
        "realname": u.realname,
        "comment": u.comment,
        "sysadmin_flag": u.sysadmin,
        "admin_role_in_auth": false,
        "creation_time": time(u.created_at),
        "update_time": time(u.updated_at),
    })
}

pub async fn current_user(State(st): State<AppState>, Caller(who): Caller) -> ApiResult {
    match &who {
        Subject::User { id, .. } => {
            let u = st
                .registry
                .db()
                .user_by_id(*id)
                .await?
                .ok_or_else(|| ApiErr::not_found("user gone"))?;
            Ok(ok_json(user_json(&u)))
        }
        Subject::Robot { id, name, .. } => Ok(ok_json(
            json!({"user_id": id, "username": name, "sysadmin_flag": false}),
        )),
        Subject::Anonymous => Err(ApiErr::refused(&who)),
    }
}

pub(super) fn require_admin(who: &Subject) -> ApiResult<()> {
    if who.is_sysadmin() {
        Ok(())
    } else {
        Err(ApiErr::refused(who))
    }
}

/// Harbor's `q` filter: `key=value,key2=~fuzzy`. Returns the plain value of `key`.
pub(super) fn q_value<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    let raw = q.get("q")?;
    raw.split(',').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_start_matches('~'))
    })
}

pub async fn list_users(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    require_admin(&who)?;
    let p = Paging::from(&q)?;
    let name = q_value(&q, "username").or(q.get("username").map(String::as_str));
    let (users, total) = st.registry.db().list_users(name, p.offset(), p.size).await?;
    Ok(p.respond(
        &format!("{PREFIX}/users"),
        &q,
        users.iter().map(user_json).collect(),
        total,
    ))
}

#[derive(Deserialize)]
pub struct NewUser {
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    realname: String,
    password: String,
    #[serde(default)]
    comment: String,
}

fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 255
        && !u.starts_with("robot$")
        && !u
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || ",~#$%:".contains(c))
}

pub async fn create_user(State(st): State<AppState>, Caller(who): Caller, Json(b): Json<NewUser>) -> ApiResult {
    require_admin(&who)?;
    if !valid_username(&b.username) {
        return Err(ApiErr::bad(
            "username must be 1 to 255 characters without spaces or any of ,~#$%:",
        ));
    }
    password_policy(&b.password).map_err(ApiErr::bad)?;
    let db = st.registry.db();
    if db.user_by_name(&b.username).await?.is_some() {
        return Err(ApiErr::new(
            StatusCode::CONFLICT,
            format!("user {} already exists", b.username),
        ));
    }
    let id = db
        .create_user(&UserRow {
            id: 0,
            username: b.username.clone(),
            email: b.email,
            realname: b.realname,
            comment: b.comment,
            password_hash: hash_password(&b.password),
            sysadmin: false,
            created_at: 0,
            updated_at: 0,
        })
        .await?;
    audit(&st, &who, "create", "user", &b.username).await;
    Ok(created(format!("{PREFIX}/users/{id}")))
}

fn self_or_admin(who: &Subject, id: i64) -> ApiResult<()> {
    if who.is_sysadmin() || who.user_id() == Some(id) {
        Ok(())
    } else {
        Err(ApiErr::refused(who))
    }
}

async fn user(st: &AppState, id: i64) -> ApiResult<UserRow> {
    st.registry
        .db()
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("user {id} not found")))
}

pub async fn get_user(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    self_or_admin(&who, id)?;
    Ok(ok_json(user_json(&user(&st, id).await?)))
}

#[derive(Deserialize)]
pub struct Profile {
    email: Option<String>,
    realname: Option<String>,
    comment: Option<String>,
}

pub async fn update_user(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    Json(b): Json<Profile>,
) -> ApiResult {
    self_or_admin(&who, id)?;
    let u = user(&st, id).await?;
    st.registry
        .db()
        .update_user_profile(
            id,
            b.email.as_deref().unwrap_or(&u.email),
            b.realname.as_deref().unwrap_or(&u.realname),
            b.comment.as_deref().unwrap_or(&u.comment),
        )
        .await?;
    Ok(ok())
}

pub async fn delete_user(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    if who.user_id() == Some(id) {
        return Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "administrators cannot delete themselves",
        ));
    }
    let u = user(&st, id).await?;
    st.registry.db().delete_user(id).await?;
    audit(&st, &who, "delete", "user", &u.username).await;
    Ok(ok())
}

#[derive(Deserialize)]
pub struct PasswordChange {
    #[serde(default)]
    old_password: String,
    new_password: String,
}

pub async fn change_password(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    Json(b): Json<PasswordChange>,
) -> ApiResult {
    self_or_admin(&who, id)?;
    let u = user(&st, id).await?;
    // People changing their own password prove they know the old one;
    // administrators resetting someone else's do not need to.
    if who.user_id() == Some(id) && !verify_password_bounded(&b.old_password, &u.password_hash).await {
        return Err(ApiErr::new(StatusCode::FORBIDDEN, "the old password is wrong"));
    }
    password_policy(&b.new_password).map_err(ApiErr::bad)?;
    st.registry
        .db()
        .set_password_hash(id, &hash_password(&b.new_password))
        .await?;
    audit(&st, &who, "update", "user", &format!("{}/password", u.username)).await;
    Ok(ok())
}

#[derive(Deserialize)]
pub struct SysadminFlag {
    sysadmin_flag: bool,
}

pub async fn set_sysadmin(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    Json(b): Json<SysadminFlag>,
) -> ApiResult {
    require_admin(&who)?;
    let u = user(&st, id).await?;
    st.registry.db().set_sysadmin(id, b.sysadmin_flag).await?;
    audit(
        &st,
        &who,
        "update",
        "user",
        &format!("{}/sysadmin={}", u.username, b.sysadmin_flag),
    )
    .await;
    Ok(ok())
}

// ---- projects ----

async fn project_json(st: &AppState, who: &Subject, p: &ProjectRow) -> ApiResult<Value> {
    let db = st.registry.db();
    let owner = db.user_by_id(p.owner_id).await?.map(|u| u.username).unwrap_or_default();
    let role = match who.user_id() {
        Some(uid) => db.member_role(p.id, uid).await?,
        None => None,
    };
    Ok(json!({
        "project_id": p.id,
        "name": p.name,
        "owner_id": p.owner_id,
        "owner_name": owner,
        "creation_time": time(p.created_at),
        "update_time": time(p.updated_at),
        "deleted": false,
        "togglable": true,
        "current_user_role_id": role.unwrap_or(0),
        "current_user_role_ids": role.map(|r| vec![r]).unwrap_or_default(),
        "repo_count": db.project_repository_count(&p.name).await?,
        "metadata": {"public": p.public.to_string()},
        "registry_id": p.registry_id,
    }))
}

pub async fn list_projects(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    let p = Paging::from(&q)?;
    let name = q.get("name").map(String::as_str).or_else(|| q_value(&q, "name"));
    let public = match q.get("public").map(String::as_str) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiErr::bad("public is true or false")),
        None => None,
    };
    let member = match &who {
        _ if who.is_sysadmin() => None,
        Subject::User { id, .. } => Some(*id),
        // Anonymous callers and robots see public projects (robots also their own, below).
        _ => Some(-1),
    };
    let (mut rows, mut total) = st
        .registry
        .db()
        .list_projects(name, public, member, p.offset(), p.size)
        .await?;
    if let Subject::Robot {
        project_id: Some(pid), ..
    } = &who
    {
        if !rows.iter().any(|r| r.id == *pid) {
            if let Some(own) = st.registry.db().project_by_id(*pid).await? {
                if name.is_none_or(|n| own.name.contains(n)) && public.is_none_or(|pb| pb == own.public) {
                    rows.push(own);
                    total += 1;
                }
            }
        }
    }
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(project_json(&st, &who, r).await?);
    }
    Ok(p.respond(&format!("{PREFIX}/projects"), &q, items, total))
}

pub async fn head_project(State(st): State<AppState>, Query(q): Q) -> ApiResult {
    let name = q
        .get("project_name")
        .ok_or_else(|| ApiErr::bad("project_name is required"))?;
    match st.registry.db().project_by_name(name).await? {
        Some(_) => Ok(ok()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

#[derive(Deserialize)]
pub struct ProjectReq {
    project_name: Option<String>,
    public: Option<bool>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    storage_limit: Option<i64>,
    /// Makes the project a proxy cache of this registry.
    registry_id: Option<i64>,
}

impl ProjectReq {
    fn public(&self) -> ApiResult<Option<bool>> {
        match self.metadata.get("public") {
            Some(v) => public_flag(v).map(Some),
            None => Ok(self.public),
        }
    }
}

pub async fn create_project(State(st): State<AppState>, Caller(who): Caller, Json(b): Json<ProjectReq>) -> ApiResult {
    let Some(owner) = who.user_id() else {
        return Err(ApiErr::refused(&who));
    };
    if project_creation(&st).await? == "adminonly" && !who.is_sysadmin() {
        return Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "only administrators may create projects",
        ));
    }
    let name = b
        .project_name
        .clone()
        .ok_or_else(|| ApiErr::bad("project_name is required"))?;
    // A project name is a repository's first path component.
    if name.contains('/') || name.parse::<RepoName>().is_err() || name.len() > 255 {
        return Err(ApiErr::bad(format!(
            "project name {name:?} is invalid: lowercase letters, digits and . _ - separators, starting and ending with a letter or digit"
        )));
    }
    let public = b.public()?.unwrap_or(false);
    let storage_limit = limit(b.storage_limit.as_ref(), "storage", -1)?;
    if storage_limit != -1 && !who.is_sysadmin() {
        return Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "only administrators may set a project's storage_limit",
        ));
    }
    if let Some(rid) = b.registry_id.filter(|&r| r != 0) {
        if !who.is_sysadmin() {
            return Err(ApiErr::new(
                StatusCode::FORBIDDEN,
                "only administrators may create proxy cache projects",
            ));
        }
        if st.registry.db().registry(rid).await?.is_none() {
            return Err(ApiErr::bad(format!(
                "registry {rid} does not exist; add it under /registries first"
            )));
        }
    }
    match st
        .registry
        .db()
        .create_project(&name, public, owner, Role::ProjectAdmin.id())
        .await?
    {
        Some(id) => {
            if storage_limit != -1 {
                st.registry.db().set_project_quota(id, storage_limit, -1).await?;
            }
            if let Some(rid) = b.registry_id.filter(|&r| r != 0) {
                st.registry.db().set_project_registry(id, Some(rid)).await?;
            }
            audit(&st, &who, "create", "project", &name).await;
            Ok(created(format!("{PREFIX}/projects/{id}")))
        }
        None => Err(ApiErr::new(
            StatusCode::CONFLICT,
            format!("project {name} already exists"),
        )),
    }
}

pub async fn get_project(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ReadProject).await?;
    Ok(ok_json(project_json(&st, &who, &project).await?))
}

pub async fn update_project(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
    Json(b): Json<ProjectReq>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    if let Some(public) = b.public()? {
        set_public(&st, &who, &project, public).await?;
    }
    Ok(ok())
}

pub async fn delete_project(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::DeleteProject).await?;
    let repos = st.registry.db().project_repository_count(&project.name).await?;
    if repos > 0 {
        return Err(ApiErr::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "project {} still holds {repos} repositories; delete them first",
                project.name
            ),
        ));
    }
    st.registry.db().delete_project(project.id).await?;
    audit(&st, &who, "delete", "project", &project.name).await;
    Ok(ok())
}

pub async fn project_summary(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ReadProject).await?;
    let quota = quota_json(&st, &project).await?;
    let db = st.registry.db();
    let members = db.members(project.id).await?;
    let count = |r: Role| members.iter().filter(|m| m.role == r.id()).count();
    Ok(ok_json(json!({
        "repo_count": db.project_repository_count(&project.name).await?,
        "project_admin_count": count(Role::ProjectAdmin),
        "maintainer_count": count(Role::Maintainer),
        "developer_count": count(Role::Developer),
        "guest_count": count(Role::Guest),
        "limited_guest_count": count(Role::LimitedGuest),
        "quota": {"hard": quota["hard"], "used": quota["used"]},
    })))
}

pub async fn get_metadatas(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ReadProject).await?;
    let mut meta = json!({"public": project.public.to_string()});
    if let Some(r) = st.registry.db().retention_policy(project.id).await? {
        meta["retention_id"] = json!(r.id.to_string());
    }
    Ok(ok_json(meta))
}

pub async fn put_metadata(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, meta)): Path<(String, String)>,
    Json(b): Json<HashMap<String, String>>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    if meta != "public" {
        return Err(ApiErr::bad(format!(
            "metadata {meta:?} is not supported; berth knows \"public\""
        )));
    }
    let public = match b.get("public") {
        Some(v) => public_flag(v)?,
        None => return Err(ApiErr::bad("body must be {\"public\": \"true\"|\"false\"}")),
    };
    set_public(&st, &who, &project, public).await?;
    Ok(ok())
}

/// Harbor keeps `public` as the string "true" or "false".
fn public_flag(v: &str) -> ApiResult<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ApiErr::bad(format!("public is \"true\" or \"false\", not {other:?}"))),
    }
}

async fn set_public(st: &AppState, who: &Subject, project: &ProjectRow, public: bool) -> ApiResult<()> {
    st.registry.db().set_project_public(project.id, public).await?;
    audit(
        st,
        who,
        "update",
        "project",
        &format!("{}/public={public}", project.name),
    )
    .await;
    Ok(())
}

// ---- members ----

fn member_json(m: &berth_db::MemberRow) -> Value {
    let role = Role::from_id(m.role);
    json!({
        "id": m.user_id,
        "project_id": m.project_id,
        "entity_name": m.username,
        "entity_id": m.user_id,
        "entity_type": "u",
        "role_id": m.role,
        "role_name": role.map(Role::name).unwrap_or("unknown"),
    })
}

pub async fn list_members(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
    Query(q): Q,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ListMembers).await?;
    let pg = Paging::from(&q)?;
    let mut all = st.registry.db().members(project.id).await?;
    if let Some(e) = q.get("entityname") {
        all.retain(|m| m.username.contains(e.as_str()));
    }
    let total = all.len() as i64;
    let items = all
        .iter()
        .skip(pg.offset() as usize)
        .take(pg.size as usize)
        .map(member_json)
        .collect();
    Ok(pg.respond(&format!("{PREFIX}/projects/{p}/members"), &q, items, total))
}

#[derive(Deserialize)]
pub struct MemberUser {
    username: Option<String>,
    user_id: Option<i64>,
}

#[derive(Deserialize)]
pub struct NewMember {
    role_id: i64,
    member_user: MemberUser,
}

pub async fn add_member(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
    Json(b): Json<NewMember>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ManageMembers).await?;
    let role = Role::from_id(b.role_id).ok_or_else(|| ApiErr::bad(format!("role_id {} is not 1 to 5", b.role_id)))?;
    let db = st.registry.db();
    let u = match (&b.member_user.user_id, &b.member_user.username) {
        (Some(id), _) => db.user_by_id(*id).await?,
        (None, Some(name)) => db.user_by_name(name).await?,
        _ => return Err(ApiErr::bad("member_user needs username or user_id")),
    }
    .ok_or_else(|| ApiErr::not_found("no such user"))?;
    if db.member_role(project.id, u.id).await?.is_some() {
        return Err(ApiErr::new(
            StatusCode::CONFLICT,
            format!("{} is already a member", u.username),
        ));
    }
    db.set_member(project.id, u.id, role.id()).await?;
    audit(
        &st,
        &who,
        "create",
        "member",
        &format!("{}/{}:{}", project.name, u.username, role.name()),
    )
    .await;
    Ok(created(format!("{PREFIX}/projects/{}/members/{}", project.id, u.id)))
}

async fn member(st: &AppState, project: &ProjectRow, mid: i64) -> ApiResult<berth_db::MemberRow> {
    st.registry
        .db()
        .members(project.id)
        .await?
        .into_iter()
        .find(|m| m.user_id == mid)
        .ok_or_else(|| ApiErr::not_found(format!("member {mid} not found")))
}

pub async fn get_member(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, mid)): Path<(String, i64)>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ListMembers).await?;
    Ok(ok_json(member_json(&member(&st, &project, mid).await?)))
}

#[derive(Deserialize)]
pub struct RoleReq {
    role_id: i64,
}

pub async fn update_member(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, mid)): Path<(String, i64)>,
    Json(b): Json<RoleReq>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ManageMembers).await?;
    let m = member(&st, &project, mid).await?;
    let role = Role::from_id(b.role_id).ok_or_else(|| ApiErr::bad(format!("role_id {} is not 1 to 5", b.role_id)))?;
    st.registry.db().set_member(project.id, mid, role.id()).await?;
    audit(
        &st,
        &who,
        "update",
        "member",
        &format!("{}/{}:{}", project.name, m.username, role.name()),
    )
    .await;
    Ok(ok())
}

pub async fn remove_member(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, mid)): Path<(String, i64)>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ManageMembers).await?;
    let m = member(&st, &project, mid).await?;
    st.registry.db().remove_member(project.id, mid).await?;
    audit(
        &st,
        &who,
        "delete",
        "member",
        &format!("{}/{}", project.name, m.username),
    )
    .await;
    Ok(ok())
}

// ---- audit log ----

fn audit_json(a: &berth_db::AuditRow) -> Value {
    json!({
        "id": a.id,
        "username": a.username,
        "resource": a.resource,
        "resource_type": a.resource_type,
        "operation": a.operation,
        "op_time": time(a.op_time),
        "success": a.success,
    })
}

fn audit_filter(q: &HashMap<String, String>) -> AuditFilter {
    AuditFilter {
        username: q_value(q, "username").map(str::to_string),
        operation: q_value(q, "operation").map(str::to_string),
        resource_type: q_value(q, "resource_type").map(str::to_string),
        resource_prefix: q_value(q, "resource").map(str::to_string),
        from_ms: None,
        to_ms: None,
    }
}

pub async fn project_logs(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
    Query(q): Q,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ListLogs).await?;
    let pg = Paging::from(&q)?;
    let mut f = audit_filter(&q);
    f.resource_prefix = Some(format!("{}/", project.name));
    let (rows, total) = st.registry.db().list_audit(&f, pg.offset(), pg.size).await?;
    Ok(pg.respond(
        &format!("{PREFIX}/projects/{p}/logs"),
        &q,
        rows.iter().map(audit_json).collect(),
        total,
    ))
}

pub async fn audit_logs(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    require_admin(&who)?;
    let pg = Paging::from(&q)?;
    let (rows, total) = st
        .registry
        .db()
        .list_audit(&audit_filter(&q), pg.offset(), pg.size)
        .await?;
    Ok(pg.respond(
        &format!("{PREFIX}/audit-logs"),
        &q,
        rows.iter().map(audit_json).collect(),
        total,
    ))
}

// ---- repositories, artifacts, tags ----

/// `{repo}` in a path is relative to the project and, as in Harbor, has its
/// slashes encoded twice (`a%252Fb`), which arrive here as `%2F`.
fn repo_name(project: &ProjectRow, repo: &str) -> ApiResult<RepoName> {
    let rel = repo.replace("%2F", "/").replace("%2f", "/");
    format!("{}/{rel}", project.name)
        .parse()
        .map_err(|e: berth_oci::NameError| ApiErr::bad(e.to_string()))
}

fn repo_json(project: &ProjectRow, r: &berth_db::RepositoryRow) -> Value {
    json!({
        "id": r.id,
        "project_id": project.id,
        "name": r.name,
        "description": "",
        "artifact_count": r.artifact_count,
        "pull_count": 0,
        "creation_time": time(r.created_at),
        "update_time": time(r.updated_at),
    })
}

pub async fn list_repositories(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
    Query(q): Q,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ListRepositories).await?;
    let pg = Paging::from(&q)?;
    let filter = q_value(&q, "name");
    let (rows, total) = st
        .registry
        .db()
        .list_repositories(&format!("{}/", project.name), filter, pg.offset(), pg.size)
        .await?;
    Ok(pg.respond(
        &format!("{PREFIX}/projects/{p}/repositories"),
        &q,
        rows.iter().map(|r| repo_json(&project, r)).collect(),
        total,
    ))
}

pub async fn all_repositories(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    let pg = Paging::from(&q)?;
    let db = st.registry.db();
    // The projects the caller may list repositories of, then their repositories.
    let member = if who.is_sysadmin() {
        None
    } else {
        Some(who.user_id().unwrap_or(-1))
    };
    let (projects, _) = db.list_projects(None, None, member, 0, i64::MAX / 2).await?;
    let mut all = Vec::new();
    for p in &projects {
        if project_perms(db, &who, Some(p))
            .await?
            .contains(&Perm::ListRepositories)
        {
            let (rows, _) = db
                .list_repositories(&format!("{}/", p.name), q_value(&q, "name"), 0, i64::MAX / 2)
                .await?;
            all.extend(rows.iter().map(|r| repo_json(p, r)));
        }
    }
    let total = all.len() as i64;
    let items = all
        .into_iter()
        .skip(pg.offset() as usize)
        .take(pg.size as usize)
        .collect();
    Ok(pg.respond(&format!("{PREFIX}/repositories"), &q, items, total))
}

/// The project a path names (checked for `perm`), and its repository.
struct Target {
    project: ProjectRow,
    name: RepoName,
    id: i64,
}

async fn repository(st: &AppState, who: &Subject, h: &HeaderMap, p: &str, repo: &str, perm: Perm) -> ApiResult<Target> {
    let (project, _) = project_with(st, who, h, p, perm).await?;
    let name = repo_name(&project, repo)?;
    let id = repo_id(st, &name).await?;
    Ok(Target { project, name, id })
}

async fn repo_id(st: &AppState, name: &RepoName) -> ApiResult<i64> {
    st.registry
        .db()
        .repository_id(name.as_str())
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("repository {name} not found")))
}

pub async fn get_repository(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, repo)): Path<(String, String)>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ListRepositories).await?;
    let name = repo_name(&project, &repo)?;
    let (rows, _) = st.registry.db().list_repositories(name.as_str(), None, 0, 100).await?;
    let r = rows
        .iter()
        .find(|r| r.name == name.as_str())
        .ok_or_else(|| ApiErr::not_found(format!("repository {name} not found")))?;
    Ok(ok_json(repo_json(&project, r)))
}

pub async fn delete_repository(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, repo)): Path<(String, String)>,
) -> ApiResult {
    let Target { name, id, .. } = repository(&st, &who, &h, &p, &repo, Perm::Delete).await?;
    st.registry.check_tags_mutable(&name, id, None).await?;
    st.registry.db().delete_repository_content(id).await?;
    audit(&st, &who, "delete", "repository", name.as_str()).await;
    Ok(ok())
}

fn artifact_type(m: &ManifestRow) -> &'static str {
    let at = m.artifact_type.as_deref().unwrap_or("");
    if m.media_type.contains("index") || m.media_type.contains("list") {
        "IMAGE"
    } else if at.contains("helm") {
        "CHART"
    } else if at.contains("cncf.notary") || at.contains("signature") || at.contains("cosign") {
        "SIGNATURE"
    } else if at.contains("spdx") || at.contains("cyclonedx") || at.contains("sbom") {
        "SBOM"
    } else if at.is_empty() || at.contains("container.image") || at.contains("image.config") {
        "IMAGE"
    } else {
        "UNKNOWN"
    }
}

async fn artifact_json(
    st: &AppState,
    project: &ProjectRow,
    repo: i64,
    m: &ManifestRow,
    with_tags: bool,
) -> ApiResult<Value> {
    let db = st.registry.db();
    let tags: Vec<Value> = if with_tags {
        db.manifest_tags(repo, &m.digest)
            .await?
            .iter()
            .map(
                |t| json!({"name": t.name, "repository_id": repo, "push_time": time(t.updated_at), "immutable": false}),
            )
            .collect()
    } else {
        vec![]
    };
    let referrers: Vec<Value> = db
        .referrers(repo, &m.digest, None)
        .await?
        .iter()
        .map(|r| json!({"child_digest": r.digest, "annotations": r.artifact_type.as_ref().map(|t| json!({"artifactType": t}))}))
        .collect();
    let annotations: Value = m
        .annotations
        .as_deref()
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or(Value::Null);
    Ok(json!({
        "digest": m.digest,
        "media_type": m.media_type,
        "manifest_media_type": m.media_type,
        "artifact_type": m.artifact_type,
        "type": artifact_type(m),
        "project_id": project.id,
        "repository_id": repo,
        "size": db.artifact_size(repo, &m.digest).await?,
        "push_time": time(m.pushed_at),
        // Harbor's value for "never pulled".
        "pull_time": match db.pulled_at(repo, &m.digest).await? {
            Some(t) => time(t),
            None => "0001-01-01T00:00:00.000Z".to_string(),
        },
        "annotations": annotations,
        "subject": m.subject,
        "accessories": referrers,
        "tags": tags,
    }))
}

pub async fn list_artifacts(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, repo)): Path<(String, String)>,
    Query(q): Q,
) -> ApiResult {
    let Target { project, id, .. } = repository(&st, &who, &h, &p, &repo, Perm::Pull).await?;
    let pg = Paging::from(&q)?;
    let with_tags = q.get("with_tag").is_none_or(|v| v != "false");
    let (rows, total) = st.registry.db().list_manifests(id, pg.offset(), pg.size).await?;
    let mut items = Vec::new();
    for m in &rows {
        items.push(artifact_json(&st, &project, id, m, with_tags).await?);
    }
    Ok(pg.respond(
        &format!("{PREFIX}/projects/{p}/repositories/{repo}/artifacts"),
        &q,
        items,
        total,
    ))
}

async fn artifact(st: &AppState, id: i64, name: &RepoName, reference: &str) -> ApiResult<ManifestRow> {
    let r: Reference = reference
        .parse()
        .map_err(|e: berth_oci::NameError| ApiErr::bad(e.to_string()))?;
    let db = st.registry.db();
    let row = match &r {
        Reference::Tag(t) => db.tagged_manifest(id, t.as_str()).await?,
        Reference::Digest(d) => db.manifest(id, &d.to_string()).await?,
    };
    row.ok_or_else(|| ApiErr::not_found(format!("artifact {name}:{reference} not found")))
}

pub async fn get_artifact(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, repo, reference)): Path<(String, String, String)>,
) -> ApiResult {
    let Target { project, name, id } = repository(&st, &who, &h, &p, &repo, Perm::Pull).await?;
    let m = artifact(&st, id, &name, &reference).await?;
    Ok(ok_json(artifact_json(&st, &project, id, &m, true).await?))
}

pub async fn delete_artifact(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, repo, reference)): Path<(String, String, String)>,
) -> ApiResult {
    let Target { name, id, .. } = repository(&st, &who, &h, &p, &repo, Perm::Delete).await?;
    let m = artifact(&st, id, &name, &reference).await?;
    let digest: Reference = m.digest.parse().map_err(|_| ApiErr::bad("stored digest"))?;
    st.registry.delete_manifest(&name, &digest).await?;
    audit(&st, &who, "delete", "artifact", &format!("{name}@{}", m.digest)).await;
    Ok(ok())
}

pub async fn list_tags(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, repo, reference)): Path<(String, String, String)>,
    Query(q): Q,
) -> ApiResult {
    let Target { name, id, .. } = repository(&st, &who, &h, &p, &repo, Perm::Pull).await?;
    let m = artifact(&st, id, &name, &reference).await?;
    let pg = Paging::from(&q)?;
    let tags = st.registry.db().manifest_tags(id, &m.digest).await?;
    let total = tags.len() as i64;
    let items = tags
        .iter()
        .skip(pg.offset() as usize)
        .take(pg.size as usize)
        .map(|t| json!({"name": t.name, "repository_id": id, "push_time": time(t.updated_at), "immutable": false}))
        .collect();
    Ok(pg.respond(
        &format!("{PREFIX}/projects/{p}/repositories/{repo}/artifacts/{reference}/tags"),
        &q,
        items,
        total,
    ))
}

#[derive(Deserialize)]
pub struct NewTag {
    name: String,
}

pub async fn create_tag(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, repo, reference)): Path<(String, String, String)>,
    Json(b): Json<NewTag>,
) -> ApiResult {
    let Target { name, id, .. } = repository(&st, &who, &h, &p, &repo, Perm::CreateTag).await?;
    let m = artifact(&st, id, &name, &reference).await?;
    let tag: berth_oci::Tag = b
        .name
        .parse()
        .map_err(|e: berth_oci::NameError| ApiErr::bad(e.to_string()))?;
    if st.registry.db().tagged_manifest(id, tag.as_str()).await?.is_some() {
        return Err(ApiErr::new(
            StatusCode::CONFLICT,
            format!("tag {tag} already exists in {name}"),
        ));
    }
    st.registry.db().set_tag(id, tag.as_str(), &m.digest).await?;
    audit(&st, &who, "create", "tag", &format!("{name}:{tag}")).await;
    Ok(created(format!(
        "{PREFIX}/projects/{p}/repositories/{repo}/artifacts/{}/tags/{tag}",
        m.digest
    )))
}

pub async fn delete_tag(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, repo, reference, tag)): Path<(String, String, String, String)>,
) -> ApiResult {
    let Target { name, id, .. } = repository(&st, &who, &h, &p, &repo, Perm::DeleteTag).await?;
    let m = artifact(&st, id, &name, &reference).await?;
    let on_it = st
        .registry
        .db()
        .manifest_tags(id, &m.digest)
        .await?
        .iter()
        .any(|t| t.name == tag);
    if on_it {
        st.registry.check_tag_mutable(&name, &tag, "deleted").await?;
    }
    if !on_it || !st.registry.db().delete_tag(id, &tag).await? {
        return Err(ApiErr::not_found(format!("tag {tag} not found on {name}@{}", m.digest)));
    }
    audit(&st, &who, "delete", "tag", &format!("{name}:{tag}")).await;
    Ok(ok())
}

// ---- robots ----

fn robot_json(r: &RobotRow, secret: Option<&str>) -> Value {
    let permissions: Value = serde_json::from_str(&r.permissions).unwrap_or(Value::Array(vec![]));
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "level": r.level,
        "disable": r.disabled,
        "expires_at": if r.expires_at < 0 { -1 } else { r.expires_at / 1000 },
        "duration": -1,
        "permissions": permissions,
        "creation_time": time(r.created_at),
        "update_time": time(r.updated_at),
    });
    if let Some(s) = secret {
        v["secret"] = Value::String(s.to_string());
    }
    v
}

/// May `who` manage (or, with `read`, see) robots of `project`? None: system robots.
async fn robot_permission(st: &AppState, who: &Subject, project: Option<&ProjectRow>, read: bool) -> ApiResult<()> {
    if who.is_sysadmin() {
        return Ok(());
    }
    let Some(p) = project else {
        return Err(ApiErr::refused(who));
    };
    let perms = project_perms(st.registry.db(), who, Some(p)).await?;
    let need = if read { Perm::ListRobots } else { Perm::ManageRobots };
    if perms.contains(&need) {
        Ok(())
    } else {
        Err(ApiErr::refused(who))
    }
}

async fn robot_project(st: &AppState, r: &RobotRow) -> ApiResult<Option<ProjectRow>> {
    Ok(match r.project_id {
        Some(pid) => st.registry.db().project_by_id(pid).await?,
        None => None,
    })
}

pub async fn list_robots(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    let pg = Paging::from(&q)?;
    let db = st.registry.db();
    let project = match q_value(&q, "ProjectID").or(q_value(&q, "project_id")) {
        Some(id) => {
            let id: i64 = id.parse().map_err(|_| ApiErr::bad("ProjectID must be a number"))?;
            Some(
                db.project_by_id(id)
                    .await?
                    .ok_or_else(|| ApiErr::not_found(format!("project {id} not found")))?,
            )
        }
        None => None,
    };
    robot_permission(&st, &who, project.as_ref(), true).await?;
    let all = db.list_robots(project.as_ref().map(|p| p.id)).await?;
    let total = all.len() as i64;
    let items = all
        .iter()
        .skip(pg.offset() as usize)
        .take(pg.size as usize)
        .map(|r| robot_json(r, None))
        .collect();
    Ok(pg.respond(&format!("{PREFIX}/robots"), &q, items, total))
}

#[derive(Deserialize)]
pub struct RobotReq {
    name: String,
    #[serde(default)]
    description: String,
    /// Days; -1 for never.
    #[serde(default = "never")]
    duration: i64,
    level: String,
    #[serde(default)]
    disable: bool,
    permissions: Vec<RobotPermission>,
}

fn never() -> i64 {
    -1
}

fn expiry(duration_days: i64) -> ApiResult<i64> {
    match duration_days {
        -1 => Ok(-1),
        d if d > 0 => Ok(berth_db::now_ms() + d * 86_400_000),
        _ => Err(ApiErr::bad("duration is a number of days, or -1 for never")),
    }
}

pub async fn create_robot(State(st): State<AppState>, Caller(who): Caller, Json(b): Json<RobotReq>) -> ApiResult {
    let db = st.registry.db();
    if b.name.is_empty() || b.name.contains(['$', '+', '/', ' ']) {
        return Err(ApiErr::bad("robot name must be non-empty without $, +, / or spaces"));
    }
    let (full_name, project) = match b.level.as_str() {
        "system" => (format!("robot${}", b.name), None),
        "project" => {
            let [perm] = b.permissions.as_slice() else {
                return Err(ApiErr::bad(
                    "a project robot has exactly one permission entry, for its project",
                ));
            };
            let p = db
                .project_by_name(&perm.namespace)
                .await?
                .ok_or_else(|| ApiErr::not_found(format!("project {} not found", perm.namespace)))?;
            (format!("robot${}+{}", p.name, b.name), Some(p))
        }
        other => {
            return Err(ApiErr::bad(format!(
                "level is \"system\" or \"project\", not {other:?}"
            )))
        }
    };
    robot_permission(&st, &who, project.as_ref(), false).await?;
    for perm in &b.permissions {
        if perm.kind != "project" {
            return Err(ApiErr::bad(format!(
                "permission kind {:?} is not supported; use \"project\"",
                perm.kind
            )));
        }
        if let Some(p) = &project {
            if perm.namespace != p.name {
                return Err(ApiErr::bad(
                    "a project robot may only hold permissions in its own project",
                ));
            }
        }
    }
    let secret = random_secret(32);
    let row = RobotRow {
        id: 0,
        name: full_name.clone(),
        description: b.description,
        secret_hash: hash_secret(&secret),
        level: b.level,
        project_id: project.as_ref().map(|p| p.id),
        permissions: serde_json::to_string(&b.permissions).expect("permissions serialise"),
        expires_at: expiry(b.duration)?,
        disabled: b.disable,
        created_at: 0,
        updated_at: 0,
    };
    let id = db
        .create_robot(&row)
        .await?
        .ok_or_else(|| ApiErr::new(StatusCode::CONFLICT, format!("robot {full_name} already exists")))?;
    audit(&st, &who, "create", "robot", &full_name).await;
    let mut resp = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::LOCATION, format!("{PREFIX}/robots/{id}")),
        ],
        json!({"id": id, "name": full_name, "secret": secret, "creation_time": time(berth_db::now_ms()),
               "expires_at": if row.expires_at < 0 { -1 } else { row.expires_at / 1000 }})
        .to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, crate::response::header("no-store"));
    Ok(resp)
}

async fn robot(st: &AppState, id: i64) -> ApiResult<RobotRow> {
    st.registry
        .db()
        .robot_by_id(id)
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("robot {id} not found")))
}

pub async fn get_robot(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    let r = robot(&st, id).await?;
    robot_permission(&st, &who, robot_project(&st, &r).await?.as_ref(), true).await?;
    Ok(ok_json(robot_json(&r, None)))
}

#[derive(Deserialize)]
pub struct RobotUpdate {
    description: Option<String>,
    duration: Option<i64>,
    disable: Option<bool>,
    permissions: Option<Vec<RobotPermission>>,
}

pub async fn update_robot(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    Json(b): Json<RobotUpdate>,
) -> ApiResult {
    let mut r = robot(&st, id).await?;
    let project = robot_project(&st, &r).await?;
    robot_permission(&st, &who, project.as_ref(), false).await?;
    if let Some(d) = b.description {
        r.description = d;
    }
    if let Some(d) = b.duration {
        r.expires_at = expiry(d)?;
    }
    if let Some(d) = b.disable {
        r.disabled = d;
    }
    if let Some(p) = b.permissions {
        if let Some(proj) = &project {
            if p.iter().any(|x| x.namespace != proj.name || x.kind != "project") {
                return Err(ApiErr::bad(
                    "a project robot may only hold permissions in its own project",
                ));
            }
        }
        r.permissions = serde_json::to_string(&p).expect("permissions serialise");
    }
    st.registry.db().update_robot(&r).await?;
    audit(&st, &who, "update", "robot", &r.name).await;
    Ok(ok())
}

#[derive(Deserialize)]
pub struct SecretReq {
    #[serde(default)]
    secret: String,
}

/// PATCH: a new secret, chosen by the caller or generated; shown once.
pub async fn refresh_robot(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    body: Option<Json<SecretReq>>,
) -> ApiResult {
    let mut r = robot(&st, id).await?;
    robot_permission(&st, &who, robot_project(&st, &r).await?.as_ref(), false).await?;
    let chosen = body.map(|b| b.0.secret).unwrap_or_default();
    let secret = if chosen.is_empty() {
        random_secret(32)
    } else {
        password_policy(&chosen).map_err(ApiErr::bad)?;
        chosen
    };
    r.secret_hash = hash_secret(&secret);
    st.registry.db().update_robot(&r).await?;
    audit(&st, &who, "update", "robot", &format!("{}/secret", r.name)).await;
    Ok(ok_json(json!({"secret": secret})))
}

pub async fn delete_robot(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    let r = robot(&st, id).await?;
    robot_permission(&st, &who, robot_project(&st, &r).await?.as_ref(), false).await?;
    st.registry.db().delete_robot(id).await?;
    audit(&st, &who, "delete", "robot", &r.name).await;
    Ok(ok())
}

// ---- system configuration ----

pub async fn get_configurations(State(st): State<AppState>, Caller(who): Caller) -> ApiResult {
    require_admin(&who)?;
    Ok(ok_json(json!({
        "auth_mode": {"value": "db_auth", "editable": false},
        "project_creation_restriction": {"value": project_creation(&st).await?, "editable": true},
        "self_registration": {"value": false, "editable": false},
    })))
}

pub async fn put_configurations(
    State(st): State<AppState>,
    Caller(who): Caller,
    Json(b): Json<HashMap<String, Value>>,
) -> ApiResult {
    require_admin(&who)?;
    for (k, v) in &b {
        match (k.as_str(), v.as_str()) {
            ("project_creation_restriction", Some(x @ ("everyone" | "adminonly"))) => {
                st.registry.db().set_setting("project_creation_restriction", x).await?;
                audit(&st, &who, "update", "configuration", &format!("{k}={x}")).await;
            }
            ("project_creation_restriction", _) => {
                return Err(ApiErr::bad(
                    "project_creation_restriction is \"everyone\" or \"adminonly\"",
                ))
            }
            _ => return Err(ApiErr::bad(format!("setting {k:?} cannot be changed here"))),
        }
    }
    Ok(ok())
}

/// An OpenAPI 3 document made from the route list.
pub async fn openapi() -> Response {
    let mut paths = serde_json::Map::new();
    for (info, _) in routes() {
        let entry = paths
            .entry(format!("{PREFIX}{}", info.path))
            .or_insert_with(|| json!({}));
        entry[info.method.as_str().to_lowercase()] = json!({
            "summary": info.summary,
            "x-berth-authorization": format!("{:?}", info.need),
            "responses": {"200": {"description": "success"}},
        });
    }
    ok_json(json!({
        "openapi": "3.0.3",
        "info": {"title": "berth API (Harbor v2.0 compatible)", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
    }))
}

// ---- vanity paths ----

fn vanity_json(v: &berth_db::VanityRow) -> Value {
    json!({
        "id": v.id,
        "project_id": v.project_id,
        "path": v.path,
        "repo": v.repo,
        "vcs": v.vcs,
        "display": v.display,
        "subdirectory": v.subdirectory,
    })
}

pub async fn list_vanity(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ReadProject).await?;
    let rows = st.registry.db().vanity_paths(Some(project.id)).await?;
    Ok(ok_json(Value::Array(rows.iter().map(vanity_json).collect())))
}

#[derive(Deserialize)]
pub struct NewVanity {
    path: String,
    repo: String,
    vcs: Option<String>,
    display: Option<String>,
    subdirectory: Option<String>,
}

pub async fn create_vanity(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
    Json(b): Json<NewVanity>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let v = berth_core::vanity::VanityPath::new(&b.path, b.repo, b.vcs, b.display.clone(), b.subdirectory)
        .map_err(ApiErr::bad)?;
    if let Some(file) = &st.vanity {
        if file.config().paths.iter().any(|f| f.path == v.path) {
            return Err(ApiErr::new(
                StatusCode::CONFLICT,
                format!("{} is already served from the vanity file", v.path),
            ));
        }
    }
    let row = berth_db::VanityRow {
        id: 0,
        project_id: project.id,
        path: v.path.clone(),
        repo: v.repo,
        vcs: v.vcs,
        display: b.display.unwrap_or_default(),
        subdirectory: v.subdirectory.unwrap_or_default(),
    };
    let id = st
        .registry
        .db()
        .create_vanity(&row)
        .await?
        .ok_or_else(|| ApiErr::new(StatusCode::CONFLICT, format!("vanity path {} already exists", v.path)))?;
    audit(
        &st,
        &who,
        "create",
        "vanity_path",
        &format!("{}{}", project.name, v.path),
    )
    .await;
    Ok(created(format!("{PREFIX}/projects/{}/vanity-paths/{id}", project.id)))
}

pub async fn delete_vanity(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, id)): Path<(String, i64)>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    if !st.registry.db().delete_vanity(project.id, id).await? {
        return Err(ApiErr::not_found(format!(
            "vanity path {id} not found in {}",
            project.name
        )));
    }
    audit(&st, &who, "delete", "vanity_path", &format!("{}/{id}", project.name)).await;
    Ok(ok())
}

// ---- garbage collection (Harbor's /system/gc) ----

fn gc_status(s: &str) -> &'static str {
    match s {
        berth_db::PENDING => "Pending",
        berth_db::RUNNING => "Running",
        berth_db::SUCCEEDED => "Success",
        _ => "Error",
    }
}

fn gc_json(j: &berth_db::JobRow) -> Value {
    let progress: Value = j
        .progress
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    json!({
        "id": j.id,
        "job_name": "GARBAGE_COLLECTION",
        "job_kind": if j.triggered_by == "schedule" { "SCHEDULE" } else { "MANUAL" },
        "job_parameters": j.args,
        "schedule": {"type": if j.triggered_by == "schedule" { "Schedule" } else { "Manual" }},
        "job_status": gc_status(&j.status),
        "deleted": false,
        "creation_time": time(j.created_at),
        "update_time": time(j.finished_at.or(j.started_at).unwrap_or(j.created_at)),
        "triggered_by": j.triggered_by,
        "attempts": j.attempts,
        "error": j.error,
        "progress": progress,
    })
}

#[derive(Deserialize)]
pub struct GcSchedule {
    schedule: Option<GcScheduleKind>,
    #[serde(default)]
    parameters: berth_core::jobs::GcArgs,
}

#[derive(Deserialize)]
pub struct GcScheduleKind {
    #[serde(rename = "type")]
    kind: String,
    cron: Option<String>,
}

/// Starts a collection now ("Manual"), or sets the periodic schedule.
pub async fn start_gc(State(st): State<AppState>, Caller(who): Caller, body: axum::body::Bytes) -> ApiResult {
    require_admin(&who)?;
    let b: GcSchedule = if body.is_empty() {
        GcSchedule {
            schedule: None,
            parameters: Default::default(),
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiErr::bad(format!("the body is not a GC schedule: {e}")))?
    };
    let kind = b.schedule.as_ref().map_or("Manual", |s| s.kind.as_str());
    if kind != "Manual" {
        // Harbor's POST of a periodic type creates the schedule.
        let cron = schedule_cron(kind, b.schedule.as_ref().and_then(|s| s.cron.as_deref()))?;
        berth_core::jobs::set_gc_schedule(st.registry.db(), cron.as_deref(), &b.parameters).await?;
        audit(&st, &who, "create", "gc_schedule", cron.as_deref().unwrap_or("none")).await;
        return Ok(created(format!("{PREFIX}/system/gc/schedule")));
    }
    let (id, new) = berth_core::jobs::enqueue_gc(st.registry.db(), &b.parameters, who.name()).await?;
    let location = format!("{PREFIX}/system/gc/{id}");
    if !new {
        return Ok((
            StatusCode::CONFLICT,
            [(header::LOCATION, location)],
            Json(json!({"errors": [{"code": "CONFLICT", "message": format!("garbage collection {id} is already pending or running")}]})),
        )
            .into_response());
    }
    if let Some(accounts) = &st.accounts {
        accounts
            .audit(who.name(), "create", "gc", &format!("gc {id}"), true)
            .await;
    }
    Ok(created(location))
}

pub async fn list_gc(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    require_admin(&who)?;
    let pg = Paging::from(&q)?;
    let (rows, total) = st
        .registry
        .db()
        .jobs(berth_core::jobs::GC, pg.offset(), pg.size)
        .await?;
    Ok(pg.respond(
        &format!("{PREFIX}/system/gc"),
        &q,
        rows.iter().map(gc_json).collect(),
        total,
    ))
}

async fn gc_job(st: &AppState, id: &str) -> ApiResult<berth_db::JobRow> {
    let id: i64 = id.parse().map_err(|_| ApiErr::bad(format!("{id:?} is not a job id")))?;
    match st.registry.db().job(id).await? {
        Some(j) if j.kind == berth_core::jobs::GC => Ok(j),
        _ => Err(ApiErr::not_found(format!("no garbage collection {id}"))),
    }
}

pub async fn get_gc(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<String>) -> ApiResult {
    require_admin(&who)?;
    Ok(ok_json(gc_json(&gc_job(&st, &id).await?)))
}

pub async fn get_gc_log(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<String>) -> ApiResult {
    require_admin(&who)?;
    let j = gc_job(&st, &id).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        j.log,
    )
        .into_response())
}

// ---- schedules of garbage collection ----

/// Harbor's schedule types, as cron expressions (UTC).
fn schedule_cron(kind: &str, cron: Option<&str>) -> ApiResult<Option<String>> {
    let expr = match kind {
        "None" => return Ok(None),
        "Hourly" => "0 0 * * * *".to_string(),
        "Daily" => "0 0 0 * * *".to_string(),
        "Weekly" => "0 0 0 * * 0".to_string(),
        "Custom" | "Schedule" => cron
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| ApiErr::bad(format!("schedule type {kind} needs a cron expression")))?
            .to_string(),
        other => {
            return Err(ApiErr::bad(format!(
                "schedule type {other:?} is unknown; use Manual, None, Hourly, Daily, Weekly or Custom"
            )))
        }
    };
    berth_core::cron::Cron::parse(&expr).map_err(|e| ApiErr::bad(e.to_string()))?;
    Ok(Some(expr))
}

fn schedule_json(s: Option<&berth_db::ScheduleRow>) -> Value {
    match s {
        None => json!({"type": "None", "cron": ""}),
        Some(s) => {
            let kind = match s.cron.as_str() {
                "0 0 * * * *" => "Hourly",
                "0 0 0 * * *" => "Daily",
                "0 0 0 * * 0" => "Weekly",
                _ => "Custom",
            };
            json!({
                "type": kind,
                "cron": s.cron,
                "next_scheduled_time": if s.next_run_at == i64::MAX { Value::Null } else { json!(time(s.next_run_at)) },
            })
        }
    }
}

/// Sets or removes the periodic collection (Harbor's PUT of the schedule).
pub async fn put_gc_schedule(State(st): State<AppState>, Caller(who): Caller, body: axum::body::Bytes) -> ApiResult {
    require_admin(&who)?;
    let b: GcSchedule =
        serde_json::from_slice(&body).map_err(|e| ApiErr::bad(format!("the body is not a GC schedule: {e}")))?;
    let Some(s) = b.schedule else {
        return Err(ApiErr::bad("schedule is required"));
    };
    if s.kind == "Manual" {
        return Err(ApiErr::bad("a Manual collection is started with POST, not scheduled"));
    }
    let cron = schedule_cron(&s.kind, s.cron.as_deref())?;
    berth_core::jobs::set_gc_schedule(st.registry.db(), cron.as_deref(), &b.parameters).await?;
    audit(&st, &who, "update", "gc_schedule", cron.as_deref().unwrap_or("none")).await;
    Ok(ok())
}

pub async fn get_gc_schedule(State(st): State<AppState>, Caller(who): Caller) -> ApiResult {
    require_admin(&who)?;
    let s = st.registry.db().schedule("gc").await?;
    let params: Value = s
        .as_ref()
        .and_then(|s| serde_json::from_str(&s.args).ok())
        .unwrap_or_else(|| json!({}));
    Ok(ok_json(json!({
        "schedule": schedule_json(s.as_ref()),
        "job_parameters": params.to_string(),
        "parameters": params,
    })))
}

// ---- tag immutability (Harbor's /projects/{p}/immutabletagrules) ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ImmutableRuleReq {
    disabled: Option<bool>,
    tag_selectors: Vec<berth_core::retention::Selector>,
    scope_selectors: HashMap<String, Vec<berth_core::retention::Selector>>,
}

fn immutable_json(r: &berth_db::ImmutableRuleRow) -> Value {
    json!({
        "id": r.id,
        "project_id": r.project_id,
        "disabled": r.disabled,
        "priority": 0,
        "action": "immutable",
        "template": "immutable_template",
        "tag_selectors": [{"kind": "doublestar", "decoration": if r.tag_exclude { "excludes" } else { "matches" }, "pattern": r.tag_pattern}],
        "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": if r.repo_exclude { "repoExcludes" } else { "repoMatches" }, "pattern": r.repo_pattern}]},
    })
}

/// Reads a rule body; fields it leaves out keep `base`'s values.
fn immutable_rule(b: &ImmutableRuleReq, base: berth_db::ImmutableRuleRow) -> ApiResult<berth_db::ImmutableRuleRow> {
    let mut r = base;
    if let Some(d) = b.disabled {
        r.disabled = d;
    }
    let one = |sels: &[berth_core::retention::Selector], what: &str| -> ApiResult<Option<(String, bool)>> {
        match sels {
            [] => Ok(None),
            [s] => {
                if !s.kind.is_empty() && s.kind != "doublestar" {
                    return Err(ApiErr::bad(format!(
                        "{what} selector kind {:?} is not supported; use doublestar",
                        s.kind
                    )));
                }
                let exclude = match s.decoration.as_str() {
                    "matches" | "repoMatches" | "" => false,
                    "excludes" | "repoExcludes" => true,
                    d => return Err(ApiErr::bad(format!("{what} selector decoration {d:?} is unknown"))),
                };
                if s.pattern.is_empty() {
                    return Err(ApiErr::bad(format!("{what} selector needs a pattern")));
                }
                Ok(Some((s.pattern.clone(), exclude)))
            }
            _ => Err(ApiErr::bad(format!("a rule takes one {what} selector"))),
        }
    };
    if let Some((p, e)) = one(&b.tag_selectors, "tag")? {
        r.tag_pattern = p;
        r.tag_exclude = e;
    }
    if let Some(sels) = b.scope_selectors.get("repository") {
        if let Some((p, e)) = one(sels, "repository")? {
            r.repo_pattern = p;
            r.repo_exclude = e;
        }
    }
    if r.tag_pattern.is_empty() || r.repo_pattern.is_empty() {
        return Err(ApiErr::bad(
            "a rule needs tag_selectors and scope_selectors.repository, each with a pattern",
        ));
    }
    Ok(r)
}

pub async fn list_immutable_rules(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::ReadProject).await?;
    let rows = st.registry.db().immutable_rules(project.id).await?;
    Ok(ok_json(Value::Array(rows.iter().map(immutable_json).collect())))
}

pub async fn create_immutable_rule(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
    Json(b): Json<ImmutableRuleReq>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let rule = immutable_rule(
        &b,
        berth_db::ImmutableRuleRow {
            id: 0,
            project_id: project.id,
            repo_pattern: String::new(),
            repo_exclude: false,
            tag_pattern: String::new(),
            tag_exclude: false,
            disabled: false,
        },
    )?;
    let id = st.registry.db().add_immutable_rule(&rule).await?;
    audit(&st, &who, "create", "immutable_rule", &format!("{}/{id}", project.name)).await;
    Ok(created(format!(
        "{PREFIX}/projects/{}/immutabletagrules/{id}",
        project.id
    )))
}

async fn immutable_rule_of(st: &AppState, project: &ProjectRow, id: i64) -> ApiResult<berth_db::ImmutableRuleRow> {
    st.registry
        .db()
        .immutable_rules(project.id)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiErr::not_found(format!("immutability rule {id} not found in {}", project.name)))
}

pub async fn update_immutable_rule(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, id)): Path<(String, i64)>,
    Json(b): Json<ImmutableRuleReq>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let rule = immutable_rule(&b, immutable_rule_of(&st, &project, id).await?)?;
    st.registry.db().update_immutable_rule(&rule).await?;
    audit(&st, &who, "update", "immutable_rule", &format!("{}/{id}", project.name)).await;
    Ok(ok())
}

pub async fn delete_immutable_rule(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, id)): Path<(String, i64)>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    if !st.registry.db().delete_immutable_rule(project.id, id).await? {
        return Err(ApiErr::not_found(format!(
            "immutability rule {id} not found in {}",
            project.name
        )));
    }
    audit(&st, &who, "delete", "immutable_rule", &format!("{}/{id}", project.name)).await;
    Ok(ok())
}

// ---- quotas (Harbor's /quotas; a project's quota has the project's id) ----

async fn quota_json(st: &AppState, p: &ProjectRow) -> ApiResult<Value> {
    let db = st.registry.db();
    let owner = db.user_by_id(p.owner_id).await?.map(|u| u.username).unwrap_or_default();
    let mut hard = json!({"storage": p.storage_limit});
    let mut used = json!({"storage": db.project_storage(&p.name).await?});
    if p.count_limit >= 0 {
        hard["count"] = json!(p.count_limit);
        used["count"] = json!(db.project_artifact_count(&p.name).await?);
    }
    Ok(json!({
        "id": p.id,
        "ref": {"id": p.id, "name": p.name, "owner_name": owner},
        "hard": hard,
        "used": used,
        "creation_time": time(p.created_at),
        "update_time": time(p.updated_at),
    }))
}

pub async fn list_quotas(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    require_admin(&who)?;
    // Harbor's quota list takes plain query parameters, not `q=`.
    if let Some(r) = q.get("reference") {
        if r != "project" {
            return Err(ApiErr::bad(format!(
                "reference {r:?} is unknown; quotas are per project"
            )));
        }
    }
    let pg = Paging::from(&q)?;
    let db = st.registry.db();
    let (projects, total) = match q.get("reference_id") {
        Some(id) => {
            let id: i64 = id
                .parse()
                .map_err(|_| ApiErr::bad(format!("reference_id {id:?} is not a number")))?;
            let p: Vec<ProjectRow> = db.project_by_id(id).await?.into_iter().collect();
            let n = p.len() as i64;
            (p, n)
        }
        None => db.list_projects(None, None, None, pg.offset(), pg.size).await?,
    };
    let mut items = Vec::with_capacity(projects.len());
    for p in &projects {
        items.push(quota_json(&st, p).await?);
    }
    Ok(pg.respond(&format!("{PREFIX}/quotas"), &q, items, total))
}

async fn quota_project(st: &AppState, id: i64) -> ApiResult<ProjectRow> {
    st.registry
        .db()
        .project_by_id(id)
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("quota {id} not found")))
}

pub async fn get_quota(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    let p = quota_project(&st, id).await?;
    Ok(ok_json(quota_json(&st, &p).await?))
}

#[derive(Deserialize)]
pub struct QuotaReq {
    hard: HashMap<String, i64>,
}

fn limit(v: Option<&i64>, what: &str, current: i64) -> ApiResult<i64> {
    match v {
        None => Ok(current),
        Some(n) if *n >= -1 => Ok(*n),
        Some(n) => Err(ApiErr::bad(format!(
            "{what} limit {n} is invalid: use -1 for none, or 0 and up"
        ))),
    }
}

pub async fn update_quota(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    Json(b): Json<QuotaReq>,
) -> ApiResult {
    require_admin(&who)?;
    let p = quota_project(&st, id).await?;
    if let Some(k) = b.hard.keys().find(|k| *k != "storage" && *k != "count") {
        return Err(ApiErr::bad(format!(
            "quota resource {k:?} is unknown; use storage (bytes) or count (artifacts)"
        )));
    }
    let storage = limit(b.hard.get("storage"), "storage", p.storage_limit)?;
    let count = limit(b.hard.get("count"), "count", p.count_limit)?;
    st.registry.db().set_project_quota(p.id, storage, count).await?;
    audit(&st, &who, "update", "quota", &p.name).await;
    Ok(ok())
}

// ---- retention (Harbor's /retentions) ----

fn retention_json(row: &berth_db::RetentionRow) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_str(&row.rules).map_err(|e| berth_core::Error::internal("stored policy", e))?;
    v["id"] = json!(row.id);
    v["scope"] = json!({"level": "project", "ref": row.project_id});
    Ok(v)
}

/// A policy's project, if the caller holds `perm` in it.
async fn policy_with(
    st: &AppState,
    who: &Subject,
    id: i64,
    perm: Perm,
) -> ApiResult<(berth_db::RetentionRow, ProjectRow)> {
    let db = st.registry.db();
    let found = match db.retention_policy_by_id(id).await? {
        Some(row) => db.project_by_id(row.project_id).await?.map(|p| (row, p)),
        None => None,
    };
    let Some((row, project)) = found else {
        return Err(match who {
            Subject::Anonymous => ApiErr::refused(who),
            _ => ApiErr::not_found(format!("retention policy {id} not found")),
        });
    };
    if !project_perms(db, who, Some(&project)).await?.contains(&perm) {
        return Err(ApiErr::refused(who));
    }
    Ok((row, project))
}

async fn save_policy(st: &AppState, who: &Subject, body: &[u8], only: Option<i64>) -> ApiResult<(i64, ProjectRow)> {
    let mut policy: berth_core::retention::Policy =
        serde_json::from_slice(body).map_err(|e| ApiErr::bad(format!("the body is not a retention policy: {e}")))?;
    policy.check().map_err(|e| ApiErr::bad(e.message))?;
    let db = st.registry.db();
    let project = match db.project_by_id(policy.scope.reference).await? {
        Some(p) => p,
        None if matches!(who, Subject::Anonymous) => return Err(ApiErr::refused(who)),
        None => {
            return Err(ApiErr::bad(format!(
                "scope.ref {} is not a project",
                policy.scope.reference
            )))
        }
    };
    if !project_perms(db, who, Some(&project))
        .await?
        .contains(&Perm::UpdateProject)
    {
        return Err(ApiErr::refused(who));
    }
    if let Some(id) = only {
        if db.retention_policy(project.id).await?.is_none_or(|r| r.id != id) {
            return Err(ApiErr::bad(format!(
                "retention policy {id} is not project {}'s",
                project.name
            )));
        }
    } else if db.retention_policy(project.id).await?.is_some() {
        return Err(ApiErr::new(
            StatusCode::CONFLICT,
            format!("project {} already has a retention policy; update it", project.name),
        ));
    }
    for (i, r) in policy.rules.iter_mut().enumerate() {
        r.id = Some(i as i64 + 1);
        if r.action.is_empty() {
            r.action = "retain".into();
        }
    }
    policy.id = None;
    policy.algorithm = "or".into();
    let cron = policy.trigger.cron().map(str::to_string);
    let json = serde_json::to_string(&policy).expect("policy serialises");
    let id = db.set_retention_policy(project.id, &json).await?;
    let args = berth_core::jobs::RetentionArgs {
        policy_id: id,
        dry_run: false,
    };
    berth_core::jobs::set_schedule(
        db,
        &format!("retention-{id}"),
        berth_core::jobs::RETENTION,
        cron.as_deref(),
        &serde_json::to_string(&args).expect("arguments serialise"),
    )
    .await
    .map_err(|e| ApiErr::bad(e.message))?;
    Ok((id, project))
}

pub async fn create_retention(State(st): State<AppState>, Caller(who): Caller, body: axum::body::Bytes) -> ApiResult {
    let (id, project) = save_policy(&st, &who, &body, None).await?;
    audit(&st, &who, "create", "retention", &project.name).await;
    Ok(created(format!("{PREFIX}/retentions/{id}")))
}

pub async fn get_retention(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    let (row, _) = policy_with(&st, &who, id, Perm::ReadProject).await?;
    Ok(ok_json(retention_json(&row)?))
}

pub async fn update_retention(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult {
    policy_with(&st, &who, id, Perm::UpdateProject).await?;
    let (_, project) = save_policy(&st, &who, &body, Some(id)).await?;
    audit(&st, &who, "update", "retention", &project.name).await;
    Ok(ok())
}

pub async fn delete_retention(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    let (_, project) = policy_with(&st, &who, id, Perm::UpdateProject).await?;
    let db = st.registry.db();
    db.delete_schedule(&format!("retention-{id}")).await?;
    db.delete_retention_policy(id).await?;
    audit(&st, &who, "delete", "retention", &project.name).await;
    Ok(ok())
}

pub async fn retention_metadatas(Caller(who): Caller) -> ApiResult {
    if matches!(who, Subject::Anonymous) {
        return Err(ApiErr::refused(&who));
    }
    let templates: Vec<Value> = berth_core::retention::TEMPLATES
        .iter()
        .map(|(rule, name, kind)| {
            let params = if kind.is_empty() {
                json!([])
            } else {
                json!([{"type": kind, "unit": if rule.starts_with('n') { "DAYS" } else { "COUNT" }, "required": true}])
            };
            json!({"rule_template": rule, "display_text": name, "action": "retain", "params": params})
        })
        .collect();
    Ok(ok_json(json!({
        "templates": templates,
        "scope_selectors": [{"display_text": "Repositories", "kind": "doublestar", "decorations": ["repoMatches", "repoExcludes"]}],
        "tag_selectors": [{"display_text": "Tags", "kind": "doublestar", "decorations": ["matches", "excludes"]}],
    })))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ExecutionReq {
    dry_run: bool,
}

fn execution_json(j: &berth_db::JobRow) -> Value {
    let args: berth_core::jobs::RetentionArgs = serde_json::from_str(&j.args).unwrap_or_default();
    json!({
        "id": j.id,
        "policy_id": args.policy_id,
        "dry_run": args.dry_run,
        "status": gc_status(&j.status),
        "trigger": if j.triggered_by == "schedule" { "SCHEDULE" } else { "MANUAL" },
        "start_time": j.started_at.map(time),
        "end_time": j.finished_at.map(time),
        "error": j.error,
    })
}

pub async fn start_retention(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult {
    let (_, project) = policy_with(&st, &who, id, Perm::UpdateProject).await?;
    let b: ExecutionReq = if body.is_empty() {
        ExecutionReq::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiErr::bad(format!("the body is not an execution request: {e}")))?
    };
    let args = berth_core::jobs::RetentionArgs {
        policy_id: id,
        dry_run: b.dry_run,
    };
    let (eid, new) = berth_core::jobs::enqueue_retention(st.registry.db(), &args, who.name()).await?;
    let location = format!("{PREFIX}/retentions/{id}/executions/{eid}");
    if !new {
        return Ok((
            StatusCode::CONFLICT,
            [(header::LOCATION, location)],
            Json(json!({"errors": [{"code": "CONFLICT", "message": format!("retention run {eid} is already pending or running")}]})),
        )
            .into_response());
    }
    audit(&st, &who, "create", "retention_execution", &project.name).await;
    Ok(created(location))
}

/// Runs of a policy, newest first (found by their arguments).
async fn executions_of(st: &AppState, id: i64) -> ApiResult<Vec<berth_db::JobRow>> {
    let (rows, _) = st.registry.db().jobs(berth_core::jobs::RETENTION, 0, 10_000).await?;
    Ok(rows
        .into_iter()
        .filter(|j| serde_json::from_str::<berth_core::jobs::RetentionArgs>(&j.args).is_ok_and(|a| a.policy_id == id))
        .collect())
}

pub async fn list_retention_executions(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    Query(q): Q,
) -> ApiResult {
    policy_with(&st, &who, id, Perm::ReadProject).await?;
    let pg = Paging::from(&q)?;
    let all = executions_of(&st, id).await?;
    let total = all.len() as i64;
    let page: Vec<Value> = all
        .iter()
        .skip(pg.offset() as usize)
        .take(pg.size as usize)
        .map(execution_json)
        .collect();
    Ok(pg.respond(&format!("{PREFIX}/retentions/{id}/executions"), &q, page, total))
}

async fn execution(st: &AppState, id: i64, eid: i64) -> ApiResult<berth_db::JobRow> {
    executions_of(st, id)
        .await?
        .into_iter()
        .find(|j| j.id == eid)
        .ok_or_else(|| ApiErr::not_found(format!("retention run {eid} of policy {id} not found")))
}

/// The run's repositories, as Harbor's tasks (one per repository; the
/// task id is the execution's, plus the repository's place).
pub async fn list_retention_tasks(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path((id, eid)): Path<(i64, i64)>,
) -> ApiResult {
    policy_with(&st, &who, id, Perm::ReadProject).await?;
    let j = execution(&st, id, eid).await?;
    let report: Value = j
        .progress
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    let tasks: Vec<Value> = report["repositories"]
        .as_array()
        .map(|repos| {
            repos
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    json!({
                        "id": i + 1,
                        "execution_id": eid,
                        "repository": r["repository"],
                        "status": gc_status(&j.status),
                        "total": r["total"],
                        "retained": r["retained"],
                        "deleted": r["deleted"],
                        "kept": r["kept"],
                        "start_time": j.started_at.map(time),
                        "end_time": j.finished_at.map(time),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ok_json(Value::Array(tasks)))
}

/// The run's log (every task shares it).
pub async fn get_retention_task_log(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path((id, eid, _tid)): Path<(i64, i64, i64)>,
) -> ApiResult {
    policy_with(&st, &who, id, Perm::ReadProject).await?;
    let j = execution(&st, id, eid).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        j.log,
    )
        .into_response())
}

// ---- scrub ----

pub async fn start_scrub(State(st): State<AppState>, Caller(who): Caller) -> ApiResult {
    require_admin(&who)?;
    let (id, new) = berth_core::jobs::enqueue_scrub(st.registry.db(), who.name()).await?;
    let location = format!("{PREFIX}/system/scrub/{id}");
    if !new {
        return Ok((
            StatusCode::CONFLICT,
            [(header::LOCATION, location)],
            Json(json!({"errors": [{"code": "CONFLICT", "message": format!("scrub {id} is already pending or running")}]})),
        )
            .into_response());
    }
    audit(&st, &who, "create", "scrub", &format!("scrub {id}")).await;
    Ok(created(location))
}

pub async fn list_scrubs(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    require_admin(&who)?;
    let pg = Paging::from(&q)?;
    let (rows, total) = st
        .registry
        .db()
        .jobs(berth_core::jobs::SCRUB, pg.offset(), pg.size)
        .await?;
    Ok(pg.respond(
        &format!("{PREFIX}/system/scrub"),
        &q,
        rows.iter().map(|j| job_json(j, "SCRUB")).collect(),
        total,
    ))
}

pub async fn get_scrub(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    match st.registry.db().job(id).await? {
        Some(j) if j.kind == berth_core::jobs::SCRUB => {
            let mut v = job_json(&j, "SCRUB");
            v["log"] = json!(j.log);
            Ok(ok_json(v))
        }
        _ => Err(ApiErr::not_found(format!("no scrub {id}"))),
    }
}

fn job_json(j: &berth_db::JobRow, name: &str) -> Value {
    let mut v = gc_json(j);
    v["job_name"] = json!(name);
    v
}
