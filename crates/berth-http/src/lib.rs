//! The HTTP surface of berth.
//!
//! Layering: http calls core; core calls db and storage; nothing calls up.
//! This crate turns requests into [`Endpoint`]s, asks the one authorization
//! point, calls [`berth_core::Registry`], and turns answers into responses.

pub mod api;
mod endpoint;
pub mod forwarded;
pub mod metrics;
pub mod portal;
mod response;
mod token;
mod v2;
pub mod vanity;

use std::sync::Arc;

use axum::routing::{any, get};
use axum::Router;
use berth_core::auth::AuthService;
use berth_core::{Authorizer, Registry};

pub use endpoint::Endpoint;
pub use v2::V2_ROUTES;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Checks every /v2 request.
    pub auth: Arc<dyn Authorizer>,
    /// Accounts and tokens; None only in tests of the distribution API alone.
    pub accounts: Option<Arc<AuthService>>,
    /// The URL clients reach berth at, when it differs from the Host header's.
    pub public_url: Option<String>,
    /// Record manifest pulls in the audit log.
    pub audit_pulls: bool,
    /// berth itself terminates TLS: URLs it hands out say https.
    pub https: bool,
    /// Vanity paths from the file, to keep API-managed ones from clashing.
    pub vanity: Option<Arc<vanity::Vanity>>,
    /// Remote registries and replication; None in tests of other parts.
    pub replicator: Option<Arc<berth_core::replication::Replicator>>,
    /// Proxy cache projects; None in tests of other parts.
    pub proxy: Option<Arc<berth_core::proxy::ProxyCache>>,
    /// Webhook policies and deliveries; None in tests of other parts.
    pub webhooks: Option<Arc<berth_core::webhook::Webhooks>>,
}

/// The whole application: `/v2/` and everything below it.
pub fn router(state: AppState) -> Router {
    let m = Arc::new(metrics::Metrics::default());
    let m2 = m.clone();
    api::router()
        .route(
            "/metrics",
            get(move |axum::extract::State(st): axum::extract::State<AppState>| metrics::metrics(st, m2.clone())),
        )
        .route("/v2", any(v2::dispatch))
        .route("/v2/", any(v2::dispatch))
        .route("/v2/{*rest}", any(v2::dispatch))
        .route("/service/token", get(token::token).post(token::token))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(v2::not_found)
        .with_state(state.clone())
        .merge(portal::router(state))
        .layer(axum::middleware::from_fn_with_state(m, metrics::track))
        .layer(axum::middleware::map_request(host_from_authority))
}

/// HTTP/2 carries the host in `:authority`, not `Host`; give handlers a Host
/// header either way, since tokens' realms and links are built from it.
async fn host_from_authority(mut req: axum::extract::Request) -> axum::extract::Request {
    if !req.headers().contains_key(axum::http::header::HOST) {
        if let Some(a) = req
            .uri()
            .authority()
            .and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(axum::http::header::HOST, a);
        }
    }
    req
}

/// Ready when the database answers: what a load balancer should ask.
async fn readyz(axum::extract::State(st): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match st.registry.db().repository_id("").await {
        Ok(_) => {
            // Redis down degrades sessions but not pushes and pulls: say so
            // without taking every replica out of the load balancer at once.
            let redis = match &st.accounts {
                Some(a) if a.shared().uses_redis() => match a.shared().check().await {
                    Ok(()) => "redis: ok\n".to_string(),
                    Err(e) => format!("redis: {}\n", e.message),
                },
                _ => String::new(),
            };
            (axum::http::StatusCode::OK, format!("ready\n{redis}")).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}
