//! The berth binary's library half: configuration and wiring, so that tests
//! can run the real server in-process.
//!
//! Layering: this crate wires http, core, db and storage together; it holds
//! no registry logic of its own.

pub mod config;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_core::{AllowAll, Limits, Registry};
use berth_db::Db;
use berth_http::AppState;
use berth_storage::FsStore;
use tokio::net::TcpListener;

use crate::config::Loaded;

/// A registry built from configuration, ready to serve.
pub struct App {
    pub registry: Arc<Registry>,
    pub router: axum::Router,
}

/// Opens storage and the database (running migrations) and builds the router.
/// Fails, with the path in the message, when storage cannot be written.
pub async fn build(cfg: &Loaded) -> anyhow::Result<App> {
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let store = FsStore::open(cfg.storage_path()).context("opening blob storage")?;
    let url = cfg.database_url();
    let db = Db::connect(&url)
        .await
        .with_context(|| format!("opening database {}", berth_db::redact(&url)))?;
    let limits = Limits {
        max_manifest_bytes: cfg.config.registry.max_manifest_bytes as usize,
        ..Limits::default()
    };
    let registry = Arc::new(Registry::new(db, Arc::new(store), limits));
    let router = berth_http::router(AppState {
        registry: registry.clone(),
        auth: Arc::new(AllowAll),
    });
    Ok(App { registry, router })
}

/// Removes expired uploads now and then, until the process ends.
pub fn spawn_upload_purger(registry: Arc<Registry>, every: Duration, max_age: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        loop {
            tick.tick().await;
            match registry.purge_uploads(max_age).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "removed expired uploads"),
                Err(e) => tracing::warn!(error = %e, "purging expired uploads failed"),
            }
        }
    })
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, lets requests in flight finish for at most `grace`, and returns.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let deadline = async move {
        if rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = std::future::IntoFuture::into_future(server) => r,
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the shutdown grace period; exiting anyway");
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
}
