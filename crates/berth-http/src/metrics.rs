//! `/metrics` in Prometheus' text format, and request IDs.
//!
//! Every request passes through [`track`]: it gets an ID (the client's
//! `X-Request-Id` when it sent a sane one, else a new one) that comes back in
//! the response and is on every log line written while it runs, so a
//! client's error can be found in the logs. Requests are counted by route,
//! method and status, timed to the response head in a histogram per route,
//! and their body bytes counted as they flow. Labels are route kinds, never
//! repository names, so the number of series stays fixed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tracing::Instrument;

use crate::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

pub const REQUEST_ID: &str = "x-request-id";

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(&'static str, String, u16), u64>>,
    latency: Mutex<HashMap<&'static str, Histogram>>,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    in_flight: AtomicU64,
}

/// The route a request belongs to: the registry's by what the path ends
/// with, everything else by axum's matched route.
fn route_of(req: &Request) -> &'static str {
    let path = req.uri().path();
    route_of_path(path)
}

fn route_of_path(path: &str) -> &'static str {
    if let Some(rest) = path.strip_prefix("/v2") {
        return if rest.is_empty() || rest == "/" {
            "v2_base"
        } else if rest == "/_catalog" {
            "v2_catalog"
        } else if rest.ends_with("/tags/list") {
            "v2_tags"
        } else if rest.contains("/blobs/uploads") {
            "v2_upload"
        } else if rest.contains("/blobs/") {
            "v2_blob"
        } else if rest.contains("/manifests/") {
            "v2_manifest"
        } else if rest.contains("/referrers/") {
            "v2_referrers"
        } else {
            "v2_other"
        };
    }
    match path {
        p if p.starts_with("/api/") => "api",
        "/service/token" => "token",
        "/c/login" | "/c/log_out" => "session",
        "/metrics" | "/healthz" | "/readyz" => "ops",
        p if p.starts_with("/static/") => "static",
        _ => "portal",
    }
}

fn request_id(req: &Request) -> String {
    match req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()) => id.to_string(),
        _ => berth_core::auth::random_secret(12),
    }
}

fn content_length(h: &axum::http::HeaderMap) -> Option<u64> {
    h.get(axum::http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Counts the bytes of a body: by its Content-Length when it has one (and
/// then the body is left untouched), else as they pass.
fn counted(body: Body, length: Option<u64>, counter: Arc<AtomicU64>) -> Body {
    if let Some(n) = length {
        counter.fetch_add(n, Ordering::Relaxed);
        return body;
    }
    let stream = body.into_data_stream().map(move |chunk| {
        if let Ok(c) = &chunk {
            counter.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    Body::from_stream(stream)
}

pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let id = request_id(&req);
    let method = req.method().to_string();
    let span = tracing::info_span!("request", id = %id, method = %method, path = %req.uri().path());
    let started = Instant::now();
    m.in_flight.fetch_add(1, Ordering::Relaxed);
    let length = content_length(req.headers());
    let req = req.map(|b| counted(b, length, m.bytes_in.clone()));
    let resp = next.run(req).instrument(span.clone()).await;
    m.in_flight.fetch_sub(1, Ordering::Relaxed);
    let status = resp.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    {
        let mut r = m.requests.lock().unwrap();
        *r.entry((route, method.clone(), status)).or_default() += 1;
    }
    {
        let mut l = m.latency.lock().unwrap();
        let h = l.entry(route).or_default();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            h.counts[i] += 1;
        }
        h.count += 1;
        h.sum += secs;
    }
    if status >= 500 {
        span.in_scope(|| tracing::warn!(status, route, "request failed"));
    }
    let length = content_length(resp.headers());
    let mut resp = resp.map(|b| counted(b, length, m.bytes_out.clone()));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

impl Metrics {
    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP berth_http_requests_total Requests answered, by route kind, method and status.\n");
        out.push_str("# TYPE berth_http_requests_total counter\n");
        let mut rows: Vec<_> = self
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        rows.sort();
        for ((route, method, status), n) in rows {
            out.push_str(&format!(
                "berth_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP berth_http_request_duration_seconds Time to the response head, by route kind.\n");
        out.push_str("# TYPE berth_http_request_duration_seconds histogram\n");
        let lat = self.latency.lock().unwrap();
        let mut routes: Vec<_> = lat.keys().copied().collect();
        routes.sort();
        for route in routes {
            let h = &lat[route];
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                out.push_str(&format!(
                    "berth_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {cumulative}\n"
                ));
            }
            out.push_str(&format!(
                "berth_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n",
                h.count
            ));
            out.push_str(&format!(
                "berth_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n",
                h.sum
            ));
            out.push_str(&format!(
                "berth_http_request_duration_seconds_count{{route=\"{route}\"}} {}\n",
                h.count
            ));
        }
        drop(lat);
        for (name, help, v) in [
            (
                "berth_http_request_bytes_total",
                "Request body bytes received.",
                self.bytes_in.load(Ordering::Relaxed),
            ),
            (
                "berth_http_response_bytes_total",
                "Response body bytes sent.",
                self.bytes_out.load(Ordering::Relaxed),
            ),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
        }
        out.push_str(&format!(
            "# HELP berth_http_requests_in_flight Requests being answered.\n\
             # TYPE berth_http_requests_in_flight gauge\nberth_http_requests_in_flight {}\n",
            self.in_flight.load(Ordering::Relaxed)
        ));
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: impl std::fmt::Display) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"));
}

/// `GET /metrics`.
pub async fn metrics(st: AppState, m: Arc<Metrics>) -> Response {
    let mut out = m.render();
    let db = st.registry.db();
    match db.totals().await {
        Ok((blobs, bytes, uploads)) => {
            gauge(&mut out, "berth_database_up", "1 when the database answers.", 1);
            gauge(&mut out, "berth_storage_blobs", "Blobs stored.", blobs);
            gauge(&mut out, "berth_storage_bytes", "Bytes of the blobs stored.", bytes);
            gauge(
                &mut out,
                "berth_uploads_in_progress",
                "Uploads started and not yet finished.",
                uploads,
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the database does not answer");
            gauge(&mut out, "berth_database_up", "1 when the database answers.", 0);
        }
    }
    let (size, idle) = db.pool_state();
    gauge(&mut out, "berth_database_connections", "Connections in the pool.", size);
    gauge(
        &mut out,
        "berth_database_connections_idle",
        "Idle connections in the pool.",
        idle,
    );
    if let Some(a) = st.accounts.as_ref().filter(|a| a.shared().uses_redis()) {
        let up = u8::from(a.shared().check().await.is_ok());
        gauge(&mut out, "berth_redis_up", "1 when Redis answers.", up);
    }
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
