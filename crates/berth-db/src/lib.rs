//! Registry metadata in SQLite, PostgreSQL or MySQL/MariaDB.
//!
//! Layering: core calls db; db knows nothing of HTTP or of blob bytes.
//!
//! One [`Db`] serves all three databases through sqlx's `Any` driver; the
//! database is chosen by URL. Statements are written once with `?`
//! placeholders; the few that differ by dialect (upserts) are built by
//! [`Dialect`]. Migrations, one set per dialect, run by themselves on
//! [`Db::connect`], under sqlx's migration lock so that replicas starting
//! together apply them once. The suite in `tests/` runs on every database.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Row, Transaction};

mod accounts;
mod gc;
mod jobs;
mod policy;
mod registry;
mod replication;
mod webhooks;

pub use accounts::{AuditFilter, AuditRow, MemberRow, ProjectRow, RobotRow, SessionRow, UserRow, VanityRow};
pub use gc::{Unreferenced, Untagged};
pub use jobs::{JobRow, FAILED, PENDING, RUNNING, STOPPED, SUCCEEDED};
pub use policy::{ArtifactRow, ImmutableRuleRow, RetentionRow, ScheduleRow};
pub use registry::{ManifestRecord, ManifestReference, ManifestRow, RepositoryRow, TagRow, UploadRow};
pub use replication::{
    PolicyRow, RegistryRow, TaskCounts, TaskRow, TASK_FAILED, TASK_RUNNING, TASK_SKIPPED, TASK_SUCCEEDED,
};
pub use webhooks::WebhookRow;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL {0:?} is not supported (use sqlite://, postgres:// or mysql://)")]
    UnsupportedUrl(String),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A stored object a write depends on is no longer there (garbage
    /// collection removed it); the write was not made.
    #[error("{0} is not stored")]
    Missing(String),
    /// A tag an immutability rule covers already names other content; the
    /// write was not made.
    #[error("tag {0} is immutable")]
    Immutable(String),
    /// A unique name is taken, or a row is still in use; nothing was written.
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    pub fn from_url(url: &str) -> Result<Dialect> {
        let scheme = url.split(':').next().unwrap_or("");
        match scheme {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::Mysql),
            _ => Err(DbError::UnsupportedUrl(redact(url))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
            Dialect::Mysql => "MySQL",
        }
    }

    /// Rewrites `?` placeholders to `$1, $2, ...` for PostgreSQL.
    fn sql<'a>(self, s: &'a str) -> Cow<'a, str> {
        if self != Dialect::Postgres || !s.contains('?') {
            return Cow::Borrowed(s);
        }
        let mut out = String::with_capacity(s.len() + 8);
        let mut n = 0;
        for c in s.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }

    /// `INSERT INTO table (cols) VALUES (?...)` that does nothing when the key exists.
    fn insert_ignore(self, table: &str, cols: &str, key: &str) -> String {
        let marks = vec!["?"; cols.split(',').count()].join(", ");
        match self {
            Dialect::Mysql => {
                let first = key.split(',').next().unwrap_or(key).trim();
                format!("INSERT INTO {table} ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {first} = {first}")
            }
            _ => format!("INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({key}) DO NOTHING"),
        }
    }

    /// Text concatenation of two SQL expressions.
    fn concat(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Mysql => format!("CONCAT({a}, {b})"),
            _ => format!("{a} || {b}"),
        }
    }

    /// `INSERT ... ` that replaces `update` columns when the key exists.
    fn upsert(self, table: &str, cols: &str, key: &str, update: &[&str]) -> String {
        let marks = vec!["?"; cols.split(',').count()].join(", ");
        match self {
            Dialect::Mysql => {
                let set: Vec<String> = update.iter().map(|c| format!("{c} = VALUES({c})")).collect();
                format!(
                    "INSERT INTO {table} ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {}",
                    set.join(", ")
                )
            }
            _ => {
                let set: Vec<String> = update.iter().map(|c| format!("{c} = excluded.{c}")).collect();
                format!(
                    "INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({key}) DO UPDATE SET {}",
                    set.join(", ")
                )
            }
        }
    }
}

/// Escapes `%`, `_` and `!` for a LIKE pattern used with `ESCAPE '!'`
/// (not backslash, which MySQL string literals treat as an escape).
fn like_escape(s: &str) -> String {
    s.replace('!', "!!").replace('%', "!%").replace('_', "!_")
}

/// A URL with its password replaced, fit for logs and `config check`.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.split_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

fn migrations(dialect: Dialect) -> Migrator {
    let files: &[(i64, &str, &str)] = match dialect {
        Dialect::Sqlite => &[
            (1, "registry", include_str!("../migrations/sqlite/0001_registry.sql")),
            (2, "accounts", include_str!("../migrations/sqlite/0002_accounts.sql")),
            (3, "sessions", include_str!("../migrations/sqlite/0003_sessions.sql")),
            (4, "vanity", include_str!("../migrations/sqlite/0004_vanity.sql")),
            (5, "leases", include_str!("../migrations/sqlite/0005_leases.sql")),
            (6, "pull_time", include_str!("../migrations/sqlite/0006_pull_time.sql")),
            (7, "jobs_gc", include_str!("../migrations/sqlite/0007_jobs_gc.sql")),
            (8, "policies", include_str!("../migrations/sqlite/0008_policies.sql")),
            (
                9,
                "replication",
                include_str!("../migrations/sqlite/0009_replication.sql"),
            ),
            (
                10,
                "proxy_cache",
                include_str!("../migrations/sqlite/0010_proxy_cache.sql"),
            ),
            (11, "webhooks", include_str!("../migrations/sqlite/0011_webhooks.sql")),
        ],
        Dialect::Postgres => &[
            (1, "registry", include_str!("../migrations/postgres/0001_registry.sql")),
            (2, "accounts", include_str!("../migrations/postgres/0002_accounts.sql")),
            (3, "sessions", include_str!("../migrations/postgres/0003_sessions.sql")),
            (4, "vanity", include_str!("../migrations/postgres/0004_vanity.sql")),
            (5, "leases", include_str!("../migrations/postgres/0005_leases.sql")),
            (
                6,
                "pull_time",
                include_str!("../migrations/postgres/0006_pull_time.sql"),
            ),
            (7, "jobs_gc", include_str!("../migrations/postgres/0007_jobs_gc.sql")),
            (8, "policies", include_str!("../migrations/postgres/0008_policies.sql")),
            (
                9,
                "replication",
                include_str!("../migrations/postgres/0009_replication.sql"),
            ),
            (
                10,
                "proxy_cache",
                include_str!("../migrations/postgres/0010_proxy_cache.sql"),
            ),
            (11, "webhooks", include_str!("../migrations/postgres/0011_webhooks.sql")),
        ],
        Dialect::Mysql => &[
            (1, "registry", include_str!("../migrations/mysql/0001_registry.sql")),
            (2, "accounts", include_str!("../migrations/mysql/0002_accounts.sql")),
            (3, "sessions", include_str!("../migrations/mysql/0003_sessions.sql")),
            (4, "vanity", include_str!("../migrations/mysql/0004_vanity.sql")),
            (5, "leases", include_str!("../migrations/mysql/0005_leases.sql")),
            (6, "pull_time", include_str!("../migrations/mysql/0006_pull_time.sql")),
            (7, "jobs_gc", include_str!("../migrations/mysql/0007_jobs_gc.sql")),
            (8, "policies", include_str!("../migrations/mysql/0008_policies.sql")),
            (
                9,
                "replication",
                include_str!("../migrations/mysql/0009_replication.sql"),
            ),
            (
                10,
                "proxy_cache",
                include_str!("../migrations/mysql/0010_proxy_cache.sql"),
            ),
            (11, "webhooks", include_str!("../migrations/mysql/0011_webhooks.sql")),
        ],
    };
    let list: Vec<Migration> = files
        .iter()
        .map(|(v, name, sql)| {
            Migration::new(
                *v,
                Cow::Borrowed(*name),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect();
    let mut m = Migrator::DEFAULT;
    m.migrations = Cow::Owned(list);
    m
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
    /// Counts this process's commits that changed what a tag or digest
    /// resolves to, so that caches of resolution can tell they are stale.
    changes: Arc<AtomicU64>,
}

impl Db {
    /// Connects and applies every pending migration.
    pub async fn connect(url: &str) -> Result<Db> {
        Db::connect_drivers();
        let dialect = Dialect::from_url(url)?;
        let mut opts = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .max_connections(if dialect == Dialect::Sqlite { 8 } else { 16 });
        if dialect == Dialect::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; FULL makes each
                    // commit durable before the client hears of it.
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                        "PRAGMA foreign_keys = ON",
                        "PRAGMA busy_timeout = 10000",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = opts.connect(url).await?;
        migrations(dialect).run(&pool).await?;
        Ok(Db {
            pool,
            dialect,
            changes: Arc::default(),
        })
    }

    /// Changes this process made to tags and manifests so far. Writes by
    /// other processes are not counted: a cache must also age its entries.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Notes a committed change to tags or manifests.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    fn connect_drivers() {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn q<'a>(&self, s: &'a str) -> Cow<'a, str> {
        self.dialect.sql(s)
    }

    /// `sql` (an INSERT) with the new row's id returned where the database
    /// can; run it with [`Db::insert_id`].
    fn returning_id(&self, sql: &str) -> String {
        let sql = if self.dialect == Dialect::Mysql {
            sql.to_string()
        } else {
            format!("{sql} RETURNING id")
        };
        self.q(&sql).into_owned()
    }

    /// Runs an INSERT built from [`Db::returning_id`]: the new row's id.
    async fn insert_id<'q>(&self, q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>) -> Result<i64> {
        if self.dialect == Dialect::Mysql {
            let r = q.execute(&self.pool).await?;
            Ok(r.last_insert_id()
                .ok_or_else(|| sqlx::Error::Protocol("no id for the new row".into()))?)
        } else {
            Ok(q.fetch_one(&self.pool).await?.try_get(0)?)
        }
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.pool.begin().await?)
    }
}

/// A nullable text column. MySQL reports TEXT columns to the `Any` driver as
/// BLOB, so bytes are accepted too and read as UTF-8.
fn text(row: &AnyRow, col: &str) -> Result<String> {
    opt_string(row, col)?.ok_or_else(|| DbError::Sqlx(sqlx::Error::ColumnNotFound(format!("{col} is NULL"))))
}

fn opt_string(row: &AnyRow, col: &str) -> Result<Option<String>> {
    match row.try_get::<Option<String>, _>(col) {
        Ok(v) => Ok(v),
        Err(sqlx::Error::ColumnDecode { .. }) => {
            let bytes = row.try_get::<Option<Vec<u8>>, _>(col)?;
            bytes
                .map(|b| String::from_utf8(b).map_err(|e| DbError::Sqlx(sqlx::Error::Decode(Box::new(e)))))
                .transpose()
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_upserts() {
        assert_eq!(Dialect::Postgres.sql("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(Dialect::Sqlite.sql("a = ?"), "a = ?");
        assert!(Dialect::Mysql
            .insert_ignore("t", "a, b", "a")
            .ends_with("ON DUPLICATE KEY UPDATE a = a"));
        assert!(Dialect::Sqlite
            .upsert("t", "a, b", "a", &["b"])
            .ends_with("ON CONFLICT (a) DO UPDATE SET b = excluded.b"));
    }

    #[test]
    fn urls() {
        assert_eq!(Dialect::from_url("sqlite:///x.db").unwrap(), Dialect::Sqlite);
        assert_eq!(Dialect::from_url("postgresql://h/db").unwrap(), Dialect::Postgres);
        assert_eq!(Dialect::from_url("mysql://h/db").unwrap(), Dialect::Mysql);
        assert!(Dialect::from_url("redis://h").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}

/// Fresh databases for tests: SQLite always; PostgreSQL and MySQL when reachable.
pub mod testing {
    use super::{Db, Dialect};

    /// A database made for one test, dropped (best effort) by [`TestDb::drop_db`].
    pub struct TestDb {
        pub db: Db,
        pub url: String,
        admin_url: Option<String>,
        name: String,
        _dir: Option<tempfile::TempDir>,
    }

    impl TestDb {
        pub async fn drop_db(mut self) {
            self.db.close().await;
            if let Some(admin) = self.admin_url.take() {
                drop_database(&admin, &self.name).await;
            }
        }
    }

    async fn drop_database(admin: &str, name: &str) {
        if let Ok(pool) = sqlx::AnyPool::connect(admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    }

    /// A test that panicked before `drop_db` still removes its database.
    impl Drop for TestDb {
        fn drop(&mut self) {
            if let Some(admin) = self.admin_url.take() {
                let name = std::mem::take(&mut self.name);
                let _ = std::thread::spawn(move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        rt.block_on(drop_database(&admin, &name));
                    }
                })
                .join();
            }
        }
    }

    fn in_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
    }

    /// The server URLs to test against, from `BERTH_TEST_POSTGRES_URL` and
    /// `BERTH_TEST_MYSQL_URL`, defaulting to the services on this machine.
    pub fn server_urls() -> Vec<String> {
        let pg = std::env::var("BERTH_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let my = std::env::var("BERTH_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        vec![pg, my]
    }

    /// A fresh SQLite database in a temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::connect(&url).await.expect("sqlite connects");
        TestDb {
            db,
            url,
            admin_url: None,
            name: String::new(),
            _dir: Some(dir),
        }
    }

    /// A fresh database on the server at `admin_url`, or None (with a loud
    /// message) when the server is unreachable outside CI. In CI it panics.
    pub async fn on_server(admin_url: &str) -> Option<TestDb> {
        super::Db::connect_drivers();
        let pool = match sqlx::AnyPool::connect(admin_url).await {
            Ok(p) => p,
            Err(e) => {
                if in_ci() {
                    panic!("database {} unreachable in CI: {e}", super::redact(admin_url));
                }
                eprintln!("\n!!! SKIPPING database tests on {}: {e}\n", super::redact(admin_url));
                return None;
            }
        };
        let name = format!("berth_t_{}", uuid_like());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin_url);
        let url = format!("{base}/{name}");
        let db = Db::connect(&url).await.expect("connect to test database");
        assert_ne!(db.dialect(), Dialect::Sqlite);
        Some(TestDb {
            db,
            url,
            admin_url: Some(admin_url.to_string()),
            name,
            _dir: None,
        })
    }

    /// Every available database: SQLite, then each reachable server.
    pub async fn all() -> Vec<TestDb> {
        let mut out = vec![sqlite().await];
        for url in server_urls() {
            if let Some(t) = on_server(&url).await {
                out.push(t);
            }
        }
        out
    }

    fn uuid_like() -> String {
        use std::time::{SystemTime, UNIX_EPOCH};
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{:x}{:x}", n, std::process::id())
    }
}
