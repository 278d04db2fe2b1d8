//! Browser sign-in for the portal: `POST /c/login` and `GET /c/log_out`,
//! as in Harbor. The session cookie is HttpOnly and SameSite; the CSRF token
//! travels in a header that pages send back on every change.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{session_cookie, ApiErr, ApiResult, CSRF_HEADER, SESSION_COOKIE};
use crate::response::header as hv;
use crate::AppState;

fn cookie_flags(st: &AppState, h: &axum::http::HeaderMap) -> &'static str {
    let tls = crate::token::external_base(st, h).starts_with("https://");

    if tls {
        "; Path=/; HttpOnly; SameSite=Lax; Secure"
    } else {
        "; Path=/; HttpOnly; SameSite=Lax"
    }
}

/// Form or JSON with `principal` (or `username`) and `password`.
pub async fn login(State(st): State<AppState>, req: Request) -> ApiResult {
    let accounts = st
        .accounts
        .clone()
        .ok_or_else(|| ApiErr::not_found("accounts are not enabled"))?;
    let headers = req.headers().clone();
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = axum::body::to_bytes(req.into_body(), 16 << 10)
        .await
        .map_err(|_| ApiErr::bad("body too large"))?;
    let fields: HashMap<String, String> = if is_json {
        serde_json::from_slice(&body).map_err(|e| ApiErr::bad(format!("login body: {e}")))?
    } else {
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(
            &format!("/?{}", String::from_utf8_lossy(&body))
                .parse()
                .map_err(|_| ApiErr::bad("login form"))?,
        )
        .map(|q| q.0)
        .map_err(|_| ApiErr::bad("login form"))?
    };
    let user = fields
        .get("principal")
        .or(fields.get("username"))
        .ok_or_else(|| ApiErr::bad("principal is required"))?;
    let pass = fields
        .get("password")
        .ok_or_else(|| ApiErr::bad("password is required"))?;
    let who = accounts.login(user, pass).await?;
    let s = accounts.start_session(&who).await?;
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"csrf_token": s.csrf}).to_string(),
    )
        .into_response();
    let cookie = format!(
        "{SESSION_COOKIE}={}; Max-Age={}{}",
        s.cookie,
        s.max_age.as_secs(),
        cookie_flags(&st, &headers)
    );
    r.headers_mut().insert(header::SET_COOKIE, hv(cookie));
    r.headers_mut().insert(CSRF_HEADER, hv(&s.csrf));
    r.headers_mut().insert(header::CACHE_CONTROL, hv("no-store"));
    Ok(r)
}

pub async fn logout(State(st): State<AppState>, req: Request) -> Response {
    let flags = cookie_flags(&st, req.headers());
    if let (Some(accounts), Some(sid)) = (&st.accounts, session_cookie(req.headers())) {
        let _ = accounts.end_session(&sid).await;
    }
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, hv(format!("{SESSION_COOKIE}=; Max-Age=0{flags}")));
    r
}
