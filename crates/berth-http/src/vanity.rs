//! Answers `go get` for vanity import paths: a `go-import` meta tag that
//! points at the real repository, and for browsers a redirect to the
//! package's documentation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_core::vanity::{html_escape, VanityConfig, VanityPath};

/// The paths being served, swapped whole when the file changes.
pub struct Vanity {
    config: RwLock<Arc<VanityConfig>>,
    file: Option<PathBuf>,
    /// `-host`: the import path's host, whatever the request says.
    pub host: Option<String>,
    /// Where browsers go: `{docs}/{host}{path}`.
    pub docs_url: String,
    /// Paths managed through the API, beside the file's.
    db: Option<berth_db::Db>,
}

impl Vanity {
    pub fn from_config(config: VanityConfig, host: Option<String>, docs_url: String) -> Arc<Vanity> {
        Arc::new(Vanity {
            config: RwLock::new(Arc::new(config)),
            file: None,
            host,
            docs_url,
            db: None,
        })
    }

    /// Reads `file`; an invalid file is an error naming the line.
    pub fn load(file: &Path, host: Option<String>, docs_url: String) -> Result<Arc<Vanity>, String> {
        let config = read(file)?;
        Ok(Arc::new(Vanity {
            config: RwLock::new(Arc::new(config)),
            file: Some(file.to_path_buf()),
            host,
            docs_url,
            db: None,
        }))
    }

    /// Also serve the paths kept in the database (managed through the API).
    pub fn with_db(self: Arc<Self>, db: berth_db::Db) -> Arc<Vanity> {
        let config = self.config();
        Arc::new(Vanity {
            config: RwLock::new(config),
            file: self.file.clone(),
            host: self.host.clone(),
            docs_url: self.docs_url.clone(),
            db: Some(db),
        })
    }

    /// The file's paths and the database's.
    async fn effective(&self) -> Arc<VanityConfig> {
        let file = self.config();
        let Some(db) = &self.db else { return file };
        match db.vanity_paths(None).await {
            Ok(rows) => {
                let extra = rows
                    .into_iter()
                    .filter_map(|r| {
                        let opt = |s: String| Some(s).filter(|s| !s.is_empty());
                        VanityPath::new(&r.path, r.repo, Some(r.vcs), opt(r.display), opt(r.subdirectory)).ok()
                    })
                    .collect();
                Arc::new(file.with(extra))
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading vanity paths from the database failed; serving the file's");
                file
            }
        }
    }

    pub fn config(&self) -> Arc<VanityConfig> {
        self.config.read().unwrap().clone()
    }

    /// Reads the file again. On error the last good configuration keeps serving.
    pub fn reload(&self) -> Result<(), String> {
        let Some(file) = &self.file else { return Ok(()) };
        let c = read(file)?;
        *self.config.write().unwrap() = Arc::new(c);
        Ok(())
    }

    /// Reloads when the file's modification time changes, and on SIGHUP.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let Some(file) = self.file.clone() else { return };
        let this = self.clone();
        tokio::spawn(async move {
            let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut seen: Option<SystemTime> = mtime(&file);
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let signalled = match hup.as_mut() {
                    Some(h) => tokio::select! {
                        _ = h.recv() => true,
                        () = tokio::time::sleep(every) => false,
                    },
                    None => {
                        tokio::time::sleep(every).await;
                        false
                    }
                };
                let now = mtime(&file);
                if !signalled && now == seen {
                    continue;
                }
                seen = now;
                match this.reload() {
                    Ok(()) => {
                        tracing::info!(file = %file.display(), paths = this.config().paths.len(), "vanity paths reloaded")
                    }
                    Err(e) => {
                        tracing::error!(file = %file.display(), error = %e, "vanity file refused; still serving the last good one")
                    }
                }
            }
        });
    }
}

fn read(file: &Path) -> Result<VanityConfig, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    VanityConfig::parse(&text).map_err(|e| format!("{}: {e}", file.display()))
}

/// A router that answers every path from `vanity`.
pub fn router(vanity: Arc<Vanity>) -> Router {
    Router::new().fallback(answer).with_state(vanity)
}

/// The import path's host: `-host`, else the file's `host`, else the request's, without a port.
fn import_host(v: &Vanity, c: &VanityConfig, req: &Request) -> String {
    if let Some(h) = v.host.clone().or_else(|| c.host.clone()) {
        return h;
    }
    let h = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".into());
    // Import paths never carry a port.
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => h,
    }
}

pub async fn answer(State(v): State<Arc<Vanity>>, req: Request) -> Response {
    let c = v.effective().await;
    let host = import_host(&v, &c, &req);
    let path = req.uri().path().to_string();
    let go_get = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "go-get=1"));
    let cache = format!("public, max-age={}", c.cache_max_age);
    if path == "/" {
        let mut items = String::new();
        for p in c.paths.iter().rev() {
            let import = html_escape(&format!("{host}{}", p.path));
            items.push_str(&format!(
                "<li><a href=\"{docs}/{import}\">{import}</a> &rarr; <code>{}</code> ({})</li>\n",
                html_escape(&p.repo),
                html_escape(&p.vcs),
                docs = html_escape(&v.docs_url),
            ));
        }
        let body = format!(
            "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>{h}</title></head>\n<body>\n<h1>Go packages at {h}</h1>\n<ul>\n{items}</ul>\n</body>\n</html>\n",
            h = html_escape(&host)
        );
        return (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, cache.as_str()),
            ],
            body,
        )
            .into_response();
    }
    let Some(p) = c.find(&path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such package\n",
        )
            .into_response();
    };
    let prefix = format!("{host}{}", p.path);
    let docs = format!(
        "{}/{host}{}",
        v.docs_url.trim_end_matches('/'),
        path.trim_end_matches('/')
    );
    if !go_get {
        let mut r = (
            StatusCode::FOUND,
            [
                (header::LOCATION, docs.as_str()),
                (header::CACHE_CONTROL, cache.as_str()),
            ],
        )
            .into_response();
        *r.body_mut() = axum::body::Body::from(format!("see {docs}\n"));
        return r;
    }
    let mut import = format!("{prefix} {} {}", p.vcs, p.repo);
    if let Some(sub) = &p.subdirectory {
        import.push(' ');
        import.push_str(sub);
    }
    let source = match &p.display {
        Some(d) => format!(
            "<meta name=\"go-source\" content=\"{}\">\n",
            html_escape(&format!("{prefix} {d}"))
        ),
        None => String::new(),
    };
    let body = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\"/>\n\
         <meta name=\"go-import\" content=\"{}\">\n{source}<meta http-equiv=\"refresh\" content=\"0; url={d}\">\n</head>\n\
         <body>\nNothing to see here; <a href=\"{d}\">see the package's documentation</a>.\n</body>\n</html>\n",
        html_escape(&import),
        d = html_escape(&docs),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, cache.as_str()),
        ],
        body,
    )
        .into_response()
}
