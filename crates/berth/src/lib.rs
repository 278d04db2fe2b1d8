//! The berth binary's library half: configuration and wiring, so that tests
//! can run the real server in-process.
//!
//! Layering: this crate wires http, core, db and storage together; it holds
//! no registry logic of its own.

pub mod bench;
pub mod config;
pub mod gc;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use berth_core::auth::{random_secret, AuthService, AuthSettings};
use berth_core::shared::Shared;
use berth_core::{Limits, Registry};

use berth_db::Db;
use berth_http::AppState;
use berth_storage::{FsStore, S3Store};
use tokio::net::TcpListener;

use crate::config::Loaded;

/// A registry built from configuration, ready to serve.
pub struct App {
    pub registry: Arc<Registry>,
    pub accounts: Arc<AuthService>,
    pub replicator: Arc<berth_core::replication::Replicator>,
    pub webhooks: Arc<berth_core::webhook::Webhooks>,
    pub router: axum::Router,
}

/// Opens storage and the database (running migrations): what every command
/// that touches registry data needs. Fails, with the path in the message,
/// when storage cannot be written.
pub async fn open_registry(cfg: &Loaded) -> anyhow::Result<(Arc<Registry>, Db)> {
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let store: Arc<dyn berth_storage::BlobStore> = match cfg.s3() {
        Some(s3) => {
            let s3 = S3Store::new(s3).map_err(|e| anyhow::anyhow!("storage.s3: {e}"))?;
            tokio::time::timeout(Duration::from_secs(60), s3.probe())
                .await
                .map_err(|_| anyhow::anyhow!("storage.s3: the bucket did not answer within 60 s"))?
                .map_err(|e| anyhow::anyhow!("storage.s3: {e}"))?;
            Arc::new(s3)
        }
        None => Arc::new(FsStore::open(cfg.storage_path()).context("opening blob storage")?),
    };
    let url = cfg.database_url();
    let db = Db::connect(&url)
        .await
        .with_context(|| format!("opening database {}", berth_db::redact(&url)))?;
    let limits = Limits {
        max_manifest_bytes: cfg.config.registry.max_manifest_bytes as usize,
        resolve_ttl: std::time::Duration::from_millis(cfg.config.registry.tag_cache_ms),
        ..Limits::default()
    };
    Ok((Arc::new(Registry::new(db.clone(), store, limits)), db))
}

/// Opens storage and the database (running migrations) and builds the router.
/// Fails, with the path in the message, when storage cannot be written.
pub async fn build(cfg: &Loaded) -> anyhow::Result<App> {
    let (registry, db) = open_registry(cfg).await?;
    match registry.recover_interrupted_gc().await {
        Ok(r) if r.trash_restored + r.trash_purged > 0 => tracing::warn!(
            restored = r.trash_restored,
            removed = r.trash_purged,
            "finished what an interrupted garbage collection left in the trash"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "looking at the garbage collection trash failed"),
    }
    let accounts = Arc::new(accounts(cfg, &db).await?);
    let replicator = Arc::new(berth_core::replication::Replicator::new(
        registry.clone(),
        sealer(cfg, &db)?,
    ));
    let r = &cfg.config.registry;
    let webhooks = berth_core::webhook::Webhooks::new(
        db.clone(),
        sealer(cfg, &db)?,
        (r.webhook_retry_secs as i64).saturating_mul(1000),
        r.webhook_attempts as i64,
    );
    // Vanity paths answer for `vanity.hosts`: from the file if one is named,
    // and from the database (managed through the API) always.
    let v = &cfg.config.vanity;
    let vanity = if v.hosts.is_empty() {
        None
    } else {
        let base = if v.file.is_empty() {
            berth_http::vanity::Vanity::from_config(
                berth_core::vanity::VanityConfig {
                    host: None,
                    cache_max_age: berth_core::vanity::DEFAULT_MAX_AGE,
                    paths: vec![],
                },
                None,
                v.docs_url.clone(),
            )
        } else {
            berth_http::vanity::Vanity::load(std::path::Path::new(&v.file), None, v.docs_url.clone())
                .map_err(anyhow::Error::msg)?
        };
        let vanity = base.with_db(db.clone());
        vanity.watch(Duration::from_secs(2));
        Some(vanity)
    };
    let router = berth_http::router(AppState {
        registry: registry.clone(),
        auth: accounts.clone(),
        accounts: Some(accounts.clone()),
        public_url: Some(cfg.config.server.public_url.clone()).filter(|u| !u.is_empty()),
        https: !cfg.config.tls.cert_file.is_empty(),
        audit_pulls: cfg.config.auth.audit_pulls,
        vanity: vanity.clone(),
        replicator: Some(replicator.clone()),
        proxy: Some(berth_core::proxy::ProxyCache::new(replicator.clone())),
        webhooks: Some(webhooks.clone()),
    });
    let router = match vanity {
        Some(vanity) => by_host(router, berth_http::vanity::router(vanity), v.hosts.clone()),
        None => router,
    };
    let trusted = cfg
        .config
        .server
        .trusted_proxies
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    let router = router.layer(axum::middleware::map_request(berth_http::forwarded::layer(
        trusted,
        !cfg.config.tls.cert_file.is_empty(),
    )));
    Ok(App {
        registry,
        accounts,
        replicator,
        webhooks,
        router,
    })
}

/// The key that seals remote registries' passwords: configured, or for the
/// embedded database generated once beside it. An external database is
/// shared by replicas whose data directories are their own, so there a key
/// must be configured; without one, passwords cannot be stored.
fn sealer(cfg: &Loaded, db: &Db) -> anyhow::Result<Option<berth_core::sealed::Sealer>> {
    if let Some(k) = cfg.config.auth.secret_key()? {
        return Ok(Some(berth_core::sealed::Sealer::new(k.as_bytes())));
    }
    if db.dialect() != berth_db::Dialect::Sqlite {
        return Ok(None);
    }
    let file = cfg.data_dir().join("secret-key");
    let key = match std::fs::read_to_string(&file) {
        Ok(k) => k.trim_end().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = random_secret(32);
            write_private(&file, &k)?;
            k
        }
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", file.display())),
    };
    Ok(Some(berth_core::sealed::Sealer::new(key.as_bytes())))
}

/// Starts event-based replication runs for pushes and deletes this process
/// commits, until the process ends.
pub fn spawn_replication_events(replicator: Arc<berth_core::replication::Replicator>) -> tokio::task::JoinHandle<()> {
    let mut rx = replicator.registry().subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Err(err) = replicator.on_event(&e).await {
                        tracing::warn!(error = %err, repository = %e.repository, "starting event-based replication failed");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "event-based replication fell behind; {n} events were not replicated"
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

/// Sends requests for `hosts` to `vanity` and everything else to `main`.
fn by_host(main: axum::Router, vanity: axum::Router, hosts: Vec<String>) -> axum::Router {
    use tower::ServiceExt;
    let hosts: Arc<Vec<String>> = Arc::new(hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect());
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (main, vanity, hosts) = (main.clone(), vanity.clone(), hosts.clone());
        async move {
            let host = req
                .headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| req.uri().authority().map(|a| a.host().to_string()))
                .unwrap_or_default();
            let name = match host.rsplit_once(':') {
                Some((n, p)) if p.chars().all(|c| c.is_ascii_digit()) => n,
                _ => host.as_str(),
            };
            let target = if hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                vanity
            } else {
                main
            };
            target.oneshot(req).await.expect("routers are infallible")
        }
    })
}

/// Accounts and tokens: the signing key, the first admin, the `library` project.
async fn accounts(cfg: &Loaded, db: &Db) -> anyhow::Result<AuthService> {
    let a = &cfg.config.auth;
    let key = match a.token_key()? {
        Some(k) => k.into_bytes(),
        None => {
            // Generated once; every replica on this database reads the same key.
            let stored = db.setting_or_insert("token_key", &random_secret(32)).await?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(stored)
                .context("the stored token key is not base64")?
        }
    };
    let settings = AuthSettings {
        service: a.token_service.clone(),
        token_lifetime: Duration::from_secs(a.token_lifetime_secs),
        leeway: Duration::from_secs(a.token_leeway_secs),
        max_failed_logins: a.max_failed_logins,
        lockout: Duration::from_secs(a.lockout_secs),
        session_lifetime: Duration::from_secs(a.session_lifetime_secs),
    };
    let shared = if cfg.config.redis.url.is_empty() {
        Shared::local(db.clone())
    } else {
        Shared::with_redis(db.clone(), &cfg.config.redis.url).map_err(|e| anyhow::anyhow!("{e}"))?
    };
    let service = AuthService::new(db.clone(), key, settings).with_shared(Arc::new(shared));
    let configured = a.admin_password()?;
    if let Some(generated) = service
        .ensure_admin(configured.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        let file = cfg.data_dir().join("admin-password");
        write_private(&file, &generated)?;
        eprintln!(
            "\n  berth created the account `admin` with the password\n\n      {generated}\n\n  \
             It is shown once; it is also in {} (readable by this user only).\n  \
             Change it after signing in, or set BERTH_ADMIN_PASSWORD before the first start.\n",
            file.display()
        );
    }
    service.ensure_library().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(service)
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Removes expired uploads and sessions now and then, until the process ends.
/// With several replicas, a lease (in Redis or the database) makes one of them do it.
pub fn spawn_upload_purger(
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    every: Duration,
    max_age: Duration,
) -> tokio::task::JoinHandle<()> {
    let holder = random_secret(12);
    tokio::spawn(async move {
        let every = every.max(Duration::from_secs(1));
        let ttl = every * 2;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if !shared.lease("purge-expired", &holder, ttl).await {
                continue;
            }
            match registry.purge_uploads(max_age).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "removed expired uploads"),
                Err(e) => tracing::warn!(error = %e, "purging expired uploads failed"),
            }
            if let Err(e) = registry.db().purge_sessions().await {
                tracing::warn!(error = %e, "purging expired sessions failed");
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
    let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Without TCP_NODELAY a small answer written as head and body waits for
    // the client's delayed ACK: about 40 ms per manifest GET.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
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

/// Serves HTTPS: TLS (HTTP/2 or HTTP/1.1 by ALPN) on `listener`, with the same
/// shutdown behaviour as [`serve`].
pub async fn serve_tls(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let svc = TowerToHyperService::new(
                    router.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer))),
                );
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the shutdown grace period; exiting anyway");
        }
    }
    Ok(())
}

/// Answers every plain-HTTP request with a permanent redirect to HTTPS on `https_port`.
pub fn redirect_to_https(https_port: u16) -> axum::Router {
    axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_string())
            .unwrap_or_else(|| "localhost".into());
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        axum::response::Redirect::permanent(&format!("https://{host}{port}{path}"))
    })
}
