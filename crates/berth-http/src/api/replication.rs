//! Harbor's registry endpoints and replication API: `/registries`,
//! `/replication/policies`, `/replication/executions` and their tasks.
//! Everything here is for system administrators, as in Harbor.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use berth_core::replication::{Policy, RegistryInput, Replicator, RunArgs, RunProgress, Spec};
use berth_core::{Error, ErrorCode};
use berth_db::{JobRow, PolicyRow, RegistryRow, TaskRow};
use serde::Deserialize;
use serde_json::{json, Value};

use super::handlers::{audit, created, ok, ok_json, require_admin, time};
use super::{ApiErr, ApiResult, Caller, Paging, PREFIX};
use crate::AppState;

type Q = Query<HashMap<String, String>>;

/// Core's "cannot be done as asked" becomes 400; the rest as usual.
fn api(e: Error) -> ApiErr {
    match e.code {
        ErrorCode::Unsupported => ApiErr::bad(e.message),
        ErrorCode::InUse => ApiErr::new(StatusCode::CONFLICT, e.message),
        _ => e.into(),
    }
}

fn replicator(st: &AppState) -> ApiResult<&Arc<Replicator>> {
    st.replicator
        .as_ref()
        .ok_or_else(|| ApiErr::not_found("replication is not enabled on this server"))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiErr::bad(format!("the body is not {what}: {e}")))
}

// ---- registries ----

#[derive(Deserialize, Default)]
pub struct Credential {
    #[serde(default)]
    access_key: String,
    access_secret: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegistryReq {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    url: Option<String>,
    description: Option<String>,
    credential: Option<Credential>,
    // RegistryUpdate's flat form.
    access_key: Option<String>,
    access_secret: Option<String>,
    insecure: Option<bool>,
    ca_certificate: Option<String>,
    id: Option<i64>,
}

impl RegistryReq {
    /// Over `base` (a stored registry, or an empty one when creating).
    fn input(self, base: Option<&RegistryRow>) -> RegistryInput {
        let (key, secret) = match self.credential {
            Some(c) => (Some(c.access_key), c.access_secret),
            None => (self.access_key, self.access_secret),
        };
        RegistryInput {
            name: self.name.or(base.map(|b| b.name.clone())).unwrap_or_default(),
            kind: self
                .kind
                .or(base.map(|b| b.kind.clone()))
                .unwrap_or_else(|| "harbor".into()),
            url: self.url.or(base.map(|b| b.url.clone())).unwrap_or_default(),
            description: self
                .description
                .or(base.map(|b| b.description.clone()))
                .unwrap_or_default(),
            access_key: key.or(base.map(|b| b.access_key.clone())).unwrap_or_default(),
            access_secret: secret,
            insecure: self.insecure.or(base.map(|b| b.insecure)).unwrap_or(false),
            ca_cert: self
                .ca_certificate
                .filter(|c| !c.is_empty())
                .or(base.and_then(|b| b.ca_cert.clone())),
        }
    }
}

/// Never the secret, only whether there is one.
fn registry_json(r: &RegistryRow, status: Option<&str>) -> Value {
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "type": r.kind,
        "url": r.url,
        "description": r.description,
        "insecure": r.insecure,
        "credential": {
            "type": "basic",
            "access_key": r.access_key,
            "access_secret": if r.access_secret.is_some() { "*****" } else { "" },
        },
        "ca_certificate": r.ca_cert.is_some(),
        "creation_time": time(r.created_at),
        "update_time": time(r.updated_at),
    });
    if let Some(s) = status {
        v["status"] = json!(s);
    }
    v
}

async fn registry_row(st: &AppState, id: i64) -> ApiResult<RegistryRow> {
    st.registry
        .db()
        .registry(id)
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("no registry {id}")))
}

pub async fn list_registries(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    require_admin(&who)?;
    let pg = Paging::from(&q)?;
    let name = super::handlers::q_value(&q, "name").or(q.get("name").map(String::as_str));
    let rows: Vec<RegistryRow> = st
        .registry
        .db()
        .registries()
        .await?
        .into_iter()
        .filter(|r| name.is_none_or(|n| r.name.contains(n)))
        .collect();
    let total = rows.len() as i64;
    let page = rows
        .iter()
        .skip(pg.offset() as usize)
        .take(pg.size as usize)
        .map(|r| registry_json(r, None))
        .collect();
    Ok(pg.respond(&format!("{PREFIX}/registries"), &q, page, total))
}

pub async fn create_registry(State(st): State<AppState>, Caller(who): Caller, body: axum::body::Bytes) -> ApiResult {
    require_admin(&who)?;
    let rep = replicator(&st)?;
    let req: RegistryReq = parse(&body, "a registry")?;
    let input = req.input(None);
    let id = rep.create_registry(&input).await.map_err(api)?;
    audit(&st, &who, "create", "registry", &input.name).await;
    Ok(created(format!("{PREFIX}/registries/{id}")))
}

pub async fn get_registry(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    let rep = replicator(&st)?;
    let r = registry_row(&st, id).await?;
    let status = match rep.ping(&r).await {
        Ok(()) => "healthy",
        Err(_) => "unhealthy",
    };
    Ok(ok_json(registry_json(&r, Some(status))))
}

pub async fn update_registry(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult {
    require_admin(&who)?;
    let rep = replicator(&st)?;
    let old = registry_row(&st, id).await?;
    let req: RegistryReq = parse(&body, "a registry update")?;
    let input = req.input(Some(&old));
    if !rep.update_registry(id, &input).await.map_err(api)? {
        return Err(ApiErr::not_found(format!("no registry {id}")));
    }
    audit(&st, &who, "update", "registry", &input.name).await;
    Ok(ok())
}

pub async fn delete_registry(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    let r = registry_row(&st, id).await?;
    if !st.registry.db().delete_registry(id).await? {
        return Err(ApiErr::not_found(format!("no registry {id}")));
    }
    audit(&st, &who, "delete", "registry", &r.name).await;
    Ok(ok())
}

/// Checks an endpoint, stored (`id`) or not yet: 200 when it answers with
/// its credentials, 400 with the reason otherwise.
pub async fn ping_registry(State(st): State<AppState>, Caller(who): Caller, body: axum::body::Bytes) -> ApiResult {
    require_admin(&who)?;
    let rep = replicator(&st)?;
    let req: RegistryReq = parse(&body, "a registry")?;
    let outcome = match req.id {
        Some(id) => {
            let row = registry_row(&st, id).await?;
            rep.ping(&row).await
        }
        None => rep.ping_input(&req.input(None)).await,
    };
    match outcome {
        Ok(()) => Ok(ok()),
        Err(why) => Err(ApiErr::bad(format!("the registry did not answer as expected: {why}"))),
    }
}

pub async fn registry_adapters(Caller(who): Caller) -> ApiResult {
    require_admin(&who)?;
    Ok(ok_json(json!(berth_core::replication::REGISTRY_TYPES)))
}

// ---- policies ----

#[derive(Deserialize)]
pub struct RegistryRef {
    #[serde(default)]
    id: i64,
}

#[derive(Deserialize)]
pub struct PolicyReq {
    name: Option<String>,
    src_registry: Option<RegistryRef>,
    dest_registry: Option<RegistryRef>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(flatten)]
    spec: Spec,
}

fn yes() -> bool {
    true
}

/// Harbor names this berth as registry 0 (or leaves it out).
fn end(r: Option<RegistryRef>) -> Option<i64> {
    r.map(|r| r.id).filter(|id| *id > 0)
}

async fn policy_json(st: &AppState, p: &Policy) -> ApiResult<Value> {
    let db = st.registry.db();
    let side = |id: Option<i64>| async move {
        match id {
            None => Ok::<_, ApiErr>(json!({"id": 0, "name": "Local", "type": "berth"})),
            Some(id) => Ok(match db.registry(id).await? {
                Some(r) => registry_json(&r, None),
                None => json!({"id": id}),
            }),
        }
    };
    let mut v = serde_json::to_value(&p.spec).expect("spec serialises");
    v["id"] = json!(p.row.id);
    v["name"] = json!(p.row.name);
    v["enabled"] = json!(p.row.enabled);
    v["src_registry"] = side(p.row.src_registry_id).await?;
    v["dest_registry"] = side(p.row.dest_registry_id).await?;
    v["creation_time"] = json!(time(p.row.created_at));
    v["update_time"] = json!(time(p.row.updated_at));
    Ok(v)
}

async fn policy(st: &AppState, id: i64) -> ApiResult<Policy> {
    let row = st
        .registry
        .db()
        .policy(id)
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("no replication policy {id}")))?;
    Policy::from_row(row).map_err(api)
}

pub async fn list_policies(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    require_admin(&who)?;
    let pg = Paging::from(&q)?;
    let name = super::handlers::q_value(&q, "name").or(q.get("name").map(String::as_str));
    let rows: Vec<PolicyRow> = st
        .registry
        .db()
        .policies()
        .await?
        .into_iter()
        .filter(|r| name.is_none_or(|n| r.name.contains(n)))
        .collect();
    let total = rows.len() as i64;
    let mut page = Vec::new();
    for r in rows.into_iter().skip(pg.offset() as usize).take(pg.size as usize) {
        page.push(policy_json(&st, &Policy::from_row(r).map_err(api)?).await?);
    }
    Ok(pg.respond(&format!("{PREFIX}/replication/policies"), &q, page, total))
}

async fn save_policy(st: &AppState, id: i64, body: &[u8]) -> ApiResult<Policy> {
    let rep = replicator(st)?;
    let req: PolicyReq = parse(body, "a replication policy")?;
    let row = PolicyRow {
        id,
        name: req.name.unwrap_or_default(),
        src_registry_id: end(req.src_registry),
        dest_registry_id: end(req.dest_registry),
        enabled: req.enabled,
        spec: serde_json::to_string(&req.spec).expect("spec serialises"),
        created_at: 0,
        updated_at: 0,
    };
    rep.check_policy(&row, &req.spec).await.map_err(api)?;
    let db = st.registry.db();
    let id = if id == 0 {
        db.create_policy(&row).await?
    } else if db.update_policy(&row).await? {
        id
    } else {
        return Err(ApiErr::not_found(format!("no replication policy {id}")));
    };
    let p = policy(st, id).await?;
    rep.sync_schedule(&p).await.map_err(api)?;
    Ok(p)
}

pub async fn create_policy(State(st): State<AppState>, Caller(who): Caller, body: axum::body::Bytes) -> ApiResult {
    require_admin(&who)?;
    let p = save_policy(&st, 0, &body).await?;
    audit(&st, &who, "create", "replication_policy", &p.row.name).await;
    Ok(created(format!("{PREFIX}/replication/policies/{}", p.row.id)))
}

pub async fn get_policy(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    let p = policy(&st, id).await?;
    Ok(ok_json(policy_json(&st, &p).await?))
}

pub async fn update_policy(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult {
    require_admin(&who)?;
    policy(&st, id).await?;
    let p = save_policy(&st, id, &body).await?;
    audit(&st, &who, "update", "replication_policy", &p.row.name).await;
    Ok(ok())
}

pub async fn delete_policy(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    let p = policy(&st, id).await?;
    if let Some(running) = executions(&st, Some(id))
        .await?
        .iter()
        .find(|j| j.status == berth_db::PENDING || j.status == berth_db::RUNNING)
    {
        return Err(ApiErr::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "execution {} of this policy is still running; stop it first",
                running.id
            ),
        ));
    }
    st.registry.db().delete_policy(id).await?;
    berth_core::jobs::set_schedule(
        st.registry.db(),
        &berth_core::replication::schedule_name(id),
        berth_core::jobs::REPLICATION,
        None,
        "",
    )
    .await
    .map_err(api)?;
    audit(&st, &who, "delete", "replication_policy", &p.row.name).await;
    Ok(ok())
}

// ---- executions ----

fn execution_status(j: &JobRow) -> &'static str {
    match j.status.as_str() {
        berth_db::PENDING | berth_db::RUNNING => "InProgress",
        berth_db::SUCCEEDED => "Succeed",
        berth_db::STOPPED => "Stopped",
        _ => "Failed",
    }
}

fn execution_json(j: &JobRow) -> Value {
    let args: RunArgs = serde_json::from_str(&j.args).unwrap_or_default();
    let p: RunProgress = j
        .progress
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    json!({
        "id": j.id,
        "policy_id": args.policy_id,
        "status": execution_status(j),
        "status_text": j.error.clone().unwrap_or_default(),
        "trigger": args.trigger,
        "start_time": time(j.started_at.unwrap_or(j.created_at)),
        "end_time": j.finished_at.map(time),
        "total": p.total,
        "succeed": p.succeed,
        "failed": p.failed,
        "in_progress": p.in_progress,
        "stopped": 0,
        "skipped": p.skipped,
        "bytes": p.bytes,
        "attempts": j.attempts,
    })
}

/// Runs of one policy (or all), newest first: the latest 10,000.
async fn executions(st: &AppState, policy_id: Option<i64>) -> ApiResult<Vec<JobRow>> {
    let prefix = policy_id.map(berth_core::jobs::policy_args_prefix).unwrap_or_default();
    let (rows, _) = st
        .registry
        .db()
        .jobs_with_args(berth_core::jobs::REPLICATION, &prefix, 0, 10_000)
        .await?;
    Ok(rows)
}

async fn execution(st: &AppState, id: i64) -> ApiResult<JobRow> {
    match st.registry.db().job(id).await? {
        Some(j) if j.kind == berth_core::jobs::REPLICATION => Ok(j),
        _ => Err(ApiErr::not_found(format!("no replication execution {id}"))),
    }
}

#[derive(Deserialize)]
pub struct StartReq {
    policy_id: i64,
}

pub async fn start_execution(State(st): State<AppState>, Caller(who): Caller, body: axum::body::Bytes) -> ApiResult {
    require_admin(&who)?;
    let rep = replicator(&st)?;
    let req: StartReq = parse(&body, "an execution request")?;
    let p = policy(&st, req.policy_id).await?;
    if !p.row.enabled {
        return Err(ApiErr::bad(format!("policy {} is disabled", p.row.name)));
    }
    let (id, new) = rep.start(p.row.id, "manual", None).await.map_err(api)?;
    let location = format!("{PREFIX}/replication/executions/{id}");
    if !new {
        return Ok((
            StatusCode::CONFLICT,
            [(header::LOCATION, location)],
            axum::Json(json!({"errors": [{"code": "CONFLICT", "message": format!("execution {id} of this policy is already pending or running")}]})),
        )
            .into_response());
    }
    audit(&st, &who, "create", "replication_execution", &p.row.name).await;
    Ok(created(location))
}

pub async fn list_executions(State(st): State<AppState>, Caller(who): Caller, Query(q): Q) -> ApiResult {
    require_admin(&who)?;
    let pg = Paging::from(&q)?;
    let policy_id = match q.get("policy_id") {
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| ApiErr::bad("policy_id must be a number"))?,
        ),
        None => None,
    };
    let all: Vec<JobRow> = executions(&st, policy_id)
        .await?
        .into_iter()
        .filter(|j| q.get("status").is_none_or(|s| s == execution_status(j)))
        .collect();
    let total = all.len() as i64;
    let page = all
        .iter()
        .skip(pg.offset() as usize)
        .take(pg.size as usize)
        .map(execution_json)
        .collect();
    Ok(pg.respond(&format!("{PREFIX}/replication/executions"), &q, page, total))
}

pub async fn get_execution(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    let mut v = execution_json(&execution(&st, id).await?);
    let c = st.registry.db().task_counts(id).await?;
    // The tasks are the truth while a run goes on.
    if c.total > 0 {
        v["succeed"] = json!(c.succeeded);
        v["failed"] = json!(c.failed);
        v["in_progress"] = json!(c.running);
        v["skipped"] = json!(c.skipped);
    }
    Ok(ok_json(v))
}

/// Stops a run: a pending one never starts, a running one ends at its next
/// heartbeat.
pub async fn stop_execution(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    execution(&st, id).await?;
    if !st.registry.db().stop_job(id).await? {
        return Err(ApiErr::new(
            StatusCode::PRECONDITION_FAILED,
            format!("execution {id} has already ended"),
        ));
    }
    audit(&st, &who, "stop", "replication_execution", &id.to_string()).await;
    Ok(ok())
}

fn task_json(t: &TaskRow) -> Value {
    json!({
        "id": t.id,
        "execution_id": t.execution_id,
        "resource_type": "artifact",
        "src_resource": t.src_resource,
        "dst_resource": t.dst_resource,
        "operation": t.operation,
        "status": match t.status.as_str() {
            berth_db::TASK_SUCCEEDED => "Succeed",
            berth_db::TASK_FAILED => "Failed",
            berth_db::TASK_SKIPPED => "Skipped",
            _ => "InProgress",
        },
        "digest": t.digest,
        "message": t.message,
        "attempts": t.attempts,
        "start_time": time(t.started_at),
        "end_time": t.finished_at.map(time),
    })
}

pub async fn list_tasks(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    Query(q): Q,
) -> ApiResult {
    require_admin(&who)?;
    execution(&st, id).await?;
    let pg = Paging::from(&q)?;
    let all: Vec<TaskRow> = st
        .registry
        .db()
        .tasks(id)
        .await?
        .into_iter()
        .filter(|t| q.get("status").is_none_or(|s| task_json(t)["status"] == s.as_str()))
        .collect();
    let total = all.len() as i64;
    let page = all
        .iter()
        .skip(pg.offset() as usize)
        .take(pg.size as usize)
        .map(task_json)
        .collect();
    Ok(pg.respond(&format!("{PREFIX}/replication/executions/{id}/tasks"), &q, page, total))
}

pub async fn task_log(
    State(st): State<AppState>,
    Caller(who): Caller,
    Path((id, task_id)): Path<(i64, i64)>,
) -> ApiResult {
    require_admin(&who)?;
    execution(&st, id).await?;
    let t = st
        .registry
        .db()
        .task(id, task_id)
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("no task {task_id} in execution {id}")))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        t.log,
    )
        .into_response())
}

/// The run's own log (berth's addition): planning, retries, the summary.
pub async fn execution_log(State(st): State<AppState>, Caller(who): Caller, Path(id): Path<i64>) -> ApiResult {
    require_admin(&who)?;
    let j = execution(&st, id).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        j.log,
    )
        .into_response())
}
