//! Harbor's webhook API: `/projects/{project}/webhook/...`. Policies say
//! which events go where; each delivery is an execution with one task,
//! whose log holds every attempt's answer. Secrets (auth_header, secret)
//! are written, never read back: a policy shows only that it has them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use berth_core::auth::Perm;
use berth_core::webhook::{self, Delivery, Spec, Webhooks};
use berth_core::ErrorCode;
use berth_db::{JobRow, ProjectRow, WebhookRow};
use serde::Deserialize;
use serde_json::{json, Value};

use super::handlers::{audit, created, ok, ok_json, time};
use super::{project_with, ApiErr, ApiResult, Caller, Paging, PREFIX};
use crate::AppState;

type Q = Query<HashMap<String, String>>;

fn hooks(st: &AppState) -> ApiResult<&Arc<Webhooks>> {
    st.webhooks
        .as_ref()
        .ok_or_else(|| ApiErr::new(StatusCode::NOT_IMPLEMENTED, "webhooks are not enabled here"))
}

fn api(e: berth_core::Error) -> ApiErr {
    match e.code {
        ErrorCode::Unsupported => ApiErr::bad(e.message),
        _ => e.into(),
    }
}

#[derive(Deserialize)]
pub struct PolicyReq {
    name: Option<String>,
    #[serde(default)]
    description: String,
    enabled: Option<bool>,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    targets: Vec<webhook::Target>,
}

fn parse(body: &[u8]) -> ApiResult<PolicyReq> {
    serde_json::from_slice(body).map_err(|e| ApiErr::bad(format!("a webhook policy: {e}")))
}

fn spec_of(req: &PolicyReq) -> Spec {
    Spec {
        description: req.description.clone(),
        event_types: req.event_types.clone(),
        targets: req.targets.clone(),
    }
}

fn policy_json(row: &WebhookRow, project: &ProjectRow) -> Value {
    let spec: Spec = serde_json::from_str(&row.spec).unwrap_or_default();
    let targets: Vec<Value> = spec
        .targets
        .iter()
        .map(|t| {
            json!({
                "type": t.kind, "address": t.address, "skip_cert_verify": t.skip_cert_verify,
                "payload_format": t.payload_format,
                "auth_header_set": t.auth_header.is_some(), "secret_set": t.secret.is_some(),
            })
        })
        .collect();
    json!({
        "id": row.id, "name": row.name, "description": spec.description, "project_id": project.id,
        "enabled": row.enabled, "event_types": spec.event_types, "targets": targets,
        "creator": row.creator, "creation_time": time(row.created_at), "update_time": time(row.updated_at),
    })
}

async fn policy_of(st: &AppState, project: &ProjectRow, id: i64) -> ApiResult<WebhookRow> {
    st.registry
        .db()
        .webhook(project.id, id)
        .await?
        .ok_or_else(|| ApiErr::not_found(format!("no webhook policy {id} in project {}", project.name)))
}

pub async fn list_policies(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let rows = st.registry.db().webhooks(project.id).await?;
    Ok(ok_json(Value::Array(
        rows.iter().map(|r| policy_json(r, &project)).collect(),
    )))
}

pub async fn create_policy(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path(p): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let w = hooks(&st)?;
    let req = parse(&body)?;
    let name = req
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiErr::bad("a webhook policy needs a name"))?;
    let spec = spec_of(&req);
    spec.check().map_err(api)?;
    w.check_sealable(&spec).map_err(api)?;
    let bare = Spec {
        targets: spec
            .targets
            .iter()
            .map(|t| webhook::Target {
                auth_header: None,
                secret: None,
                ..t.clone()
            })
            .collect(),
        ..spec.clone()
    };
    let db = st.registry.db();
    let mut row = WebhookRow {
        id: 0,
        project_id: project.id,
        name: name.clone(),
        enabled: req.enabled.unwrap_or(true),
        spec: serde_json::to_string(&bare).expect("spec serialises"),
        creator: who.name().to_string(),
        created_at: 0,
        updated_at: 0,
    };
    let id = db.create_webhook(&row).await?;
    // Sealed under the new id: a sealed value copied to another policy does not open.
    row.id = id;
    row.spec = serde_json::to_string(&w.seal(id, &spec, None).map_err(api)?).expect("spec serialises");
    db.update_webhook(&row).await?;
    w.changed(project.id);
    audit(&st, &who, "create", "webhook", &format!("{}/{name}", project.name)).await;
    Ok(created(format!(
        "{PREFIX}/projects/{}/webhook/policies/{id}",
        project.id
    )))
}

pub async fn get_policy(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, id)): Path<(String, i64)>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let row = policy_of(&st, &project, id).await?;
    Ok(ok_json(policy_json(&row, &project)))
}

pub async fn update_policy(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, id)): Path<(String, i64)>,
    body: axum::body::Bytes,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let w = hooks(&st)?;
    let old = policy_of(&st, &project, id).await?;
    let old_spec: Spec = serde_json::from_str(&old.spec).unwrap_or_default();
    let req = parse(&body)?;
    let mut spec = spec_of(&req);
    if spec.event_types.is_empty() {
        spec.event_types = old_spec.event_types.clone();
    }
    if spec.targets.is_empty() {
        spec.targets = old_spec.targets.clone();
    }
    spec.check().map_err(api)?;
    w.check_sealable(&spec).map_err(api)?;
    // Targets as sent keep the stored secrets they do not name; the
    // stored ones are sealed already.
    let sealed = if req.targets.is_empty() {
        spec.clone()
    } else {
        w.seal(id, &spec, Some(&old_spec)).map_err(api)?
    };
    let row = WebhookRow {
        name: req
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(old.name.clone()),
        enabled: req.enabled.unwrap_or(old.enabled),
        spec: serde_json::to_string(&sealed).expect("spec serialises"),
        ..old
    };
    st.registry.db().update_webhook(&row).await?;
    w.changed(project.id);
    audit(
        &st,
        &who,
        "update",
        "webhook",
        &format!("{}/{}", project.name, row.name),
    )
    .await;
    Ok(ok())
}

pub async fn delete_policy(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, id)): Path<(String, i64)>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let row = policy_of(&st, &project, id).await?;
    st.registry.db().delete_webhook(project.id, id).await?;
    if let Some(w) = &st.webhooks {
        w.changed(project.id);
    }
    audit(
        &st,
        &who,
        "delete",
        "webhook",
        &format!("{}/{}", project.name, row.name),
    )
    .await;
    Ok(ok())
}

/// What berth can send: Harbor's `/webhook/events`.
pub async fn events(State(st): State<AppState>, Caller(who): Caller, h: HeaderMap, Path(p): Path<String>) -> ApiResult {
    project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    Ok(ok_json(json!({
        "event_type": webhook::EVENT_TYPES,
        "notify_type": ["http"],
        "payload_formats": [{"notify_type": "http", "formats": webhook::PAYLOAD_FORMATS}],
    })))
}

fn status(j: &JobRow) -> &'static str {
    match j.status.as_str() {
        berth_db::SUCCEEDED => "Success",
        berth_db::FAILED => "Error",
        berth_db::STOPPED => "Stopped",
        // A delivery waiting for its next attempt is still under way.
        berth_db::PENDING if j.attempts > 0 => "Retrying",
        berth_db::PENDING => "Pending",
        _ => "Running",
    }
}

fn execution_json(j: &JobRow, d: &Delivery) -> Value {
    json!({
        "id": j.id, "policy_id": d.policy_id, "vendor_type": "WEBHOOK", "status": status(j),
        "trigger": "EVENT", "start_time": time(j.created_at),
        "end_time": j.finished_at.map(time),
        "status_message": j.error.clone().unwrap_or_default(),
        "extra_attrs": {"event_type": d.event_type, "address": d.address, "payload_format":
            if d.content_type.contains("cloudevents") { "CloudEvents" } else { "Default" },
            "attempts": j.attempts, "max_attempts": j.max_attempts},
    })
}

async fn delivery_of(st: &AppState, policy: &WebhookRow, eid: i64) -> ApiResult<(JobRow, Delivery)> {
    let missing = || ApiErr::not_found(format!("no execution {eid} of webhook policy {}", policy.id));
    let j = st.registry.db().job(eid).await?.ok_or_else(missing)?;
    let d = (j.kind == webhook::WEBHOOK)
        .then(|| Delivery::from_job(&j))
        .flatten()
        .filter(|d| d.policy_id == policy.id)
        .ok_or_else(missing)?;
    Ok((j, d))
}

/// Deliveries of a policy, newest first.
pub async fn executions(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, id)): Path<(String, i64)>,
    Query(q): Q,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let policy = policy_of(&st, &project, id).await?;
    let page = Paging::from(&q)?;
    let (rows, total) = st
        .registry
        .db()
        .jobs_with_args(
            webhook::WEBHOOK,
            &berth_core::jobs::policy_args_prefix(policy.id),
            page.offset(),
            page.size,
        )
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .filter_map(|j| Delivery::from_job(j).map(|d| execution_json(j, &d)))
        .collect();
    Ok(page.respond(
        &format!("{PREFIX}/projects/{p}/webhook/policies/{id}/executions"),
        &q,
        items,
        total,
    ))
}

/// A delivery's one task: the request it sends.
pub async fn tasks(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, id, eid)): Path<(String, i64, i64)>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let policy = policy_of(&st, &project, id).await?;
    let (j, d) = delivery_of(&st, &policy, eid).await?;
    Ok(ok_json(json!([{
        "id": j.id, "execution_id": j.id, "status": status(&j), "run_count": j.attempts,
        "creation_time": time(j.created_at), "update_time": time(j.finished_at.or(j.started_at).unwrap_or(j.created_at)),
        "start_time": j.started_at.map(time), "end_time": j.finished_at.map(time),
        "status_message": j.error.clone().unwrap_or_default(),
        "extra_attrs": {"event_type": d.event_type, "address": d.address, "payload": d.body},
    }])))
}

/// Every attempt of a delivery, with the answer it got.
pub async fn task_log(
    State(st): State<AppState>,
    Caller(who): Caller,
    h: HeaderMap,
    Path((p, id, eid, tid)): Path<(String, i64, i64, i64)>,
) -> ApiResult {
    let (project, _) = project_with(&st, &who, &h, &p, Perm::UpdateProject).await?;
    let policy = policy_of(&st, &project, id).await?;
    let (j, _) = delivery_of(&st, &policy, eid).await?;
    if tid != j.id {
        return Err(ApiErr::not_found(format!("no task {tid} in execution {eid}")));
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        j.log,
    )
        .into_response())
}
