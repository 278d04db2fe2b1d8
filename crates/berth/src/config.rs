//! Configuration: one TOML file, `BERTH_*` environment variables, flags;
//! each later layer overrides the earlier, and every value remembers where
//! it came from. Unknown keys, in the file or the environment, are errors,
//! and so is a `--config` path that does not exist: a misplaced or
//! misspelled setting never falls back silently to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where berth keeps its data unless a section says otherwise.
    pub data_dir: PathBuf,
    pub server: Server,
    pub database: Database,
    pub redis: Redis,
    pub storage: Storage,
    pub registry: Registry,
    pub auth: Auth,
    pub tls: Tls,
    pub vanity: Vanity,
    pub log: Log,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Vanity {
    /// A govanityurls vanity.yaml; reloaded when it changes.
    pub file: String,
    /// Host names answered with vanity paths (from the file and from the
    /// API) instead of the registry (BERTH_VANITY_HOSTS takes a comma-separated list).
    pub hosts: Vec<String>,
    /// Where browsers asking for a vanity path are sent.
    pub docs_url: String,
}

impl Default for Vanity {
    fn default() -> Self {
        Vanity {
            file: String::new(),
            hosts: Vec::new(),
            docs_url: "https://pkg.go.dev".into(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; with `key_file`, `server.listen` serves HTTPS.
    /// Both files are reloaded when they change.
    pub cert_file: String,
    pub key_file: String,
    /// Optional plain-HTTP address that redirects everything to HTTPS.
    pub redirect_listen: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// First password of `admin`, used only when the account is created.
    /// Also BERTH_ADMIN_PASSWORD. Empty: berth generates one and prints it once.
    pub admin_password: String,
    /// A file holding the first admin password (also BERTH_ADMIN_PASSWORD_FILE).
    pub admin_password_file: String,
    /// Key that signs tokens, at least 32 bytes, the same on every replica.
    /// Empty: generated once and kept in the database.
    pub token_key: String,
    /// A file holding the token key.
    pub token_key_file: String,
    /// Key that seals stored credentials of remote registries, at least 32
    /// bytes, the same on every replica. Empty: with the embedded SQLite
    /// database, generated once into `<data_dir>/secret-key`; with an
    /// external database, remote registries can be added only without a password.
    pub secret_key: String,
    /// A file holding the secret key.
    pub secret_key_file: String,
    /// The `service` named in token challenges.
    pub token_service: String,
    pub token_lifetime_secs: u64,
    /// Clock difference tolerated between replicas, in seconds.
    pub token_leeway_secs: u64,
    /// Failed logins in a row before an account is refused for `lockout_secs`.
    pub max_failed_logins: u32,
    pub lockout_secs: u64,
    /// How long a portal sign-in lasts, in seconds.
    pub session_lifetime_secs: u64,
    /// Record pulls in the audit log too (pushes, deletes and logins always are).
    pub audit_pulls: bool,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            admin_password: String::new(),
            admin_password_file: String::new(),
            token_key: String::new(),
            token_key_file: String::new(),
            secret_key: String::new(),
            secret_key_file: String::new(),
            token_service: "berth".into(),
            token_lifetime_secs: 1800,
            token_leeway_secs: 60,
            max_failed_logins: 5,
            lockout_secs: 60,
            session_lifetime_secs: 12 * 3600,
            audit_pulls: false,
        }
    }
}

impl Auth {
    /// The configured first admin password, from the value or its file.
    pub fn admin_password(&self) -> Result<Option<String>, ConfigError> {
        secret_value("auth.admin_password", &self.admin_password, &self.admin_password_file)
    }

    pub fn token_key(&self) -> Result<Option<String>, ConfigError> {
        long_secret("auth.token_key", &self.token_key, &self.token_key_file)
    }

    pub fn secret_key(&self) -> Result<Option<String>, ConfigError> {
        long_secret("auth.secret_key", &self.secret_key, &self.secret_key_file)
    }
}

/// A key of at least 32 bytes, given directly or as a file.
fn long_secret(key: &str, value: &str, file: &str) -> Result<Option<String>, ConfigError> {
    let k = secret_value(key, value, file)?;
    if let Some(k) = &k {
        if k.len() < 32 {
            return Err(ConfigError::Invalid(format!(
                "{key} is {} bytes; it must be at least 32",
                k.len()
            )));
        }
    }
    Ok(k)
}

/// A secret given directly or as a file (whose trailing newline is dropped).
fn secret_value(key: &str, value: &str, file: &str) -> Result<Option<String>, ConfigError> {
    match (value.is_empty(), file.is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Ok(Some(value.to_string())),
        (true, false) => {
            let text =
                std::fs::read_to_string(file).map_err(|e| ConfigError::Invalid(format!("{key}_file {file}: {e}")))?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        (false, false) => Err(ConfigError::Invalid(format!("set {key} or {key}_file, not both"))),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address and port to listen on.
    pub listen: String,
    /// URL clients use to reach berth (token realm, Location headers), when it
    /// differs from what the Host header says.
    pub public_url: String,
    /// Reverse proxies (addresses or networks) whose X-Forwarded-Proto, -Host
    /// and -For berth honours; everyone else's are ignored.
    pub trusted_proxies: Vec<String>,
    /// Seconds that requests in flight may take to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// sqlite://, postgres:// or mysql:// URL. Empty: SQLite in data_dir.
    pub url: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    /// redis://[:password@]host:port[/db], rediss:// or redis+unix:///path.
    /// Empty: sessions and leases in the database, login counts and caches
    /// in each replica.
    pub url: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Blob storage backend: "filesystem" or "s3".
    pub backend: String,
    /// Root of the filesystem backend. Empty: data_dir/storage.
    pub path: String,
    pub s3: S3,
}

/// An S3-compatible bucket (AWS, Ceph RGW, MinIO, Garage...).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3 {
    pub bucket: String,
    /// `https://host[:port]`. Empty: AWS's endpoint for `region`.
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Key prefix inside the bucket.
    pub prefix: String,
    /// Above 0: blob downloads are redirected to presigned URLs valid this
    /// many seconds, so bytes flow from the bucket, not through berth.
    pub redirect_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Registry {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Uploads not written to for this many seconds are removed.
    pub upload_expiry_secs: u64,
    /// How often to look for expired uploads, in seconds.
    pub upload_purge_interval_secs: u64,
    /// How long, in milliseconds, a replica may answer a tag from memory.
    /// A tag moved or deleted through another replica can be seen late by
    /// at most this much; through this replica, at once. 0 turns it off.
    pub tag_cache_ms: u64,
    /// First wait before a failed webhook delivery is tried again, in
    /// seconds; each retry waits twice as long as the one before.
    pub webhook_retry_secs: u64,
    /// Attempts of a webhook delivery before it is given up.
    pub webhook_attempts: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// error, warn, info, debug or trace; or a tracing filter directive.
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("berth-data"),
            server: Server::default(),
            database: Database::default(),
            redis: Redis::default(),
            storage: Storage::default(),
            registry: Registry::default(),
            auth: Auth::default(),
            tls: Tls::default(),
            vanity: Vanity::default(),
            log: Log::default(),
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:5000".into(),
            public_url: String::new(),
            trusted_proxies: Vec::new(),
            shutdown_grace_secs: 30,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            backend: "filesystem".into(),
            path: String::new(),
            s3: S3::default(),
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            max_manifest_bytes: 4 << 20,
            upload_expiry_secs: 24 * 3600,
            upload_purge_interval_secs: 600,
            tag_cache_ms: 1000,
            webhook_retry_secs: 10,
            webhook_attempts: 6,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "environment {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// The effective configuration and the source of each key (`server.listen`, ...).
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub sources: BTreeMap<String, Source>,
    pub file: Option<PathBuf>,
}

#[derive(Debug)]
pub enum ConfigError {
    Missing(PathBuf),
    Read(PathBuf, std::io::Error),
    Parse(PathBuf, String),
    UnknownEnv(String, Vec<String>),
    EnvValue(String, String),
    Invalid(String),
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing(p) => write!(
                f,
                "config file {} does not exist; berth will not start on defaults when a config file was named",
                p.display()
            ),
            ConfigError::Read(p, e) => write!(f, "cannot read config file {}: {e}", p.display()),
            ConfigError::Parse(p, e) => write!(f, "config file {}: {e}", p.display()),
            ConfigError::UnknownEnv(v, known) => write!(
                f,
                "environment variable {v} is not a berth setting; known: {}",
                known.join(", ")
            ),
            ConfigError::EnvValue(v, e) => write!(f, "environment variable {v}: {e}"),
            ConfigError::Invalid(e) => f.write_str(e),
        }
    }
}

/// Environment variables with a BERTH_ prefix that are not settings.
const NON_SETTING_ENV: [&str; 1] = ["BERTH_CONFIG"];
/// Short names for settings that operators know from elsewhere.
const ENV_ALIASES: [(&str, &str); 2] = [
    ("BERTH_ADMIN_PASSWORD", "auth.admin_password"),
    ("BERTH_ADMIN_PASSWORD_FILE", "auth.admin_password_file"),
];
const TEST_ENV_PREFIX: &str = "BERTH_TEST_";

/// Leaf keys of a table as dotted paths, with their values.
fn leaves(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(sub) => leaves(&path, sub, out),
            other => out.push((path, other.clone())),
        }
    }
}

fn set(t: &mut toml::Table, path: &str, v: toml::Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("non-empty path");
    let mut cur = t;
    for p in parts {
        cur = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("sections are tables");
    }
    cur.insert(last.to_string(), v);
}

pub fn env_name(path: &str) -> String {
    format!("BERTH_{}", path.replace('.', "_").to_uppercase())
}

/// Command-line values that override everything else.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Loaded {
    /// Loads `file` (if any), then `env`, then `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Loaded, ConfigError> {
        let defaults = toml::Table::try_from(Config::default()).expect("defaults serialise");
        let mut default_leaves = Vec::new();
        leaves("", &defaults, &mut default_leaves);
        let mut sources: BTreeMap<String, Source> = default_leaves
            .iter()
            .map(|(k, _)| (k.clone(), Source::Default))
            .collect();
        let mut merged = defaults.clone();

        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
            // Deserialising the file alone gives errors with line and column.
            let _: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e.to_string()))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e.to_string()))?;
            let mut file_leaves = Vec::new();
            leaves("", &table, &mut file_leaves);
            for (k, v) in file_leaves {
                set(&mut merged, &k, v);
                sources.insert(k, Source::File(path.to_path_buf()));
            }
        }

        let mut by_env: BTreeMap<String, (String, toml::Value)> = default_leaves
            .iter()
            .map(|(k, v)| (env_name(k), (k.clone(), v.clone())))
            .collect();
        for (alias, key) in ENV_ALIASES {
            let v = by_env[&env_name(key)].clone();
            by_env.insert(alias.to_string(), v);
        }
        let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("BERTH_")).collect();
        env.sort();
        for (name, raw) in env {
            if NON_SETTING_ENV.contains(&name.as_str()) || name.starts_with(TEST_ENV_PREFIX) {
                continue;
            }
            let Some((key, default)) = by_env.get(&name) else {
                return Err(ConfigError::UnknownEnv(name, by_env.keys().cloned().collect()));
            };
            let value = match default {
                toml::Value::Integer(_) => toml::Value::Integer(
                    raw.trim()
                        .parse()
                        .map_err(|_| ConfigError::EnvValue(name.clone(), format!("{raw:?} is not a whole number")))?,
                ),
                toml::Value::Boolean(_) => toml::Value::Boolean(
                    raw.trim()
                        .parse()
                        .map_err(|_| ConfigError::EnvValue(name.clone(), format!("{raw:?} is not true or false")))?,
                ),
                toml::Value::Array(_) => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.into()))
                        .collect(),
                ),
                _ => toml::Value::String(raw),
            };
            set(&mut merged, key, value);
            sources.insert(key.clone(), Source::Env(name));
        }

        if let Some(l) = &flags.listen {
            set(&mut merged, "server.listen", toml::Value::String(l.clone()));
            sources.insert("server.listen".into(), Source::Flag("--listen".into()));
        }
        if let Some(c) = &flags.tls_cert {
            set(
                &mut merged,
                "tls.cert_file",
                toml::Value::String(c.display().to_string()),
            );
            sources.insert("tls.cert_file".into(), Source::Flag("--tls-cert".into()));
        }
        if let Some(k) = &flags.tls_key {
            set(
                &mut merged,
                "tls.key_file",
                toml::Value::String(k.display().to_string()),
            );
            sources.insert("tls.key_file".into(), Source::Flag("--tls-key".into()));
        }
        if let Some(d) = &flags.data_dir {
            set(&mut merged, "data_dir", toml::Value::String(d.display().to_string()));
            sources.insert("data_dir".into(), Source::Flag("--data-dir".into()));
        }

        let config: Config = merged
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(format!("configuration: {e}")))?;
        let loaded = Loaded {
            config,
            sources,
            file: file.map(Path::to_path_buf),
        };
        loaded.validate()?;
        Ok(loaded)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        c.server.listen.parse::<std::net::SocketAddr>().map_err(|e| {
            ConfigError::Invalid(format!("server.listen {:?} is not ADDRESS:PORT: {e}", c.server.listen))
        })?;
        for p in &c.server.trusted_proxies {
            p.parse::<berth_http::forwarded::Net>()
                .map_err(|e| ConfigError::Invalid(format!("server.trusted_proxies: {e}")))?;
        }
        match c.storage.backend.as_str() {
            "filesystem" => {
                if c.storage.s3 != S3::default() {
                    return Err(ConfigError::Invalid(
                        "storage.s3 is set but storage.backend is \"filesystem\"; set storage.backend = \"s3\" \
                         or remove the storage.s3 settings"
                            .into(),
                    ));
                }
            }
            "s3" => {
                if !c.storage.path.is_empty() {
                    return Err(ConfigError::Invalid(
                        "storage.path is for the filesystem backend; with storage.backend = \"s3\" blobs go to \
                         storage.s3.bucket"
                            .into(),
                    ));
                }
                if c.storage.s3.bucket.is_empty() {
                    return Err(ConfigError::Invalid(
                        "storage.backend is \"s3\" but storage.s3.bucket is empty".into(),
                    ));
                }
                if c.storage.s3.access_key.is_empty() != c.storage.s3.secret_key.is_empty() {
                    return Err(ConfigError::Invalid(
                        "storage.s3.access_key and storage.s3.secret_key go together".into(),
                    ));
                }
            }
            other => {
                return Err(ConfigError::Invalid(format!(
                    "storage.backend {other:?} is not supported; use \"filesystem\" or \"s3\""
                )));
            }
        }
        if !c.database.url.is_empty() {
            berth_db::Dialect::from_url(&c.database.url)
                .map_err(|e| ConfigError::Invalid(format!("database.url: {e}")))?;
        }
        if !c.redis.url.is_empty() {
            berth_core::shared::check_redis_url(&c.redis.url)
                .map_err(|e| ConfigError::Invalid(format!("redis.url: {e}")))?;
        }
        if c.registry.max_manifest_bytes < 4 << 20 {
            return Err(ConfigError::Invalid(format!(
                "registry.max_manifest_bytes is {}; the OCI spec asks registries to accept at least 4 MiB (4194304)",
                c.registry.max_manifest_bytes
            )));
        }
        if c.tls.cert_file.is_empty() != c.tls.key_file.is_empty() {
            return Err(ConfigError::Invalid(
                "tls.cert_file and tls.key_file go together".into(),
            ));
        }
        if !c.tls.redirect_listen.is_empty() {
            if c.tls.cert_file.is_empty() {
                return Err(ConfigError::Invalid(
                    "tls.redirect_listen needs tls.cert_file and tls.key_file".into(),
                ));
            }
            c.tls.redirect_listen.parse::<std::net::SocketAddr>().map_err(|e| {
                ConfigError::Invalid(format!(
                    "tls.redirect_listen {:?} is not ADDRESS:PORT: {e}",
                    c.tls.redirect_listen
                ))
            })?;
        }
        if !c.vanity.file.is_empty() && c.vanity.hosts.is_empty() {
            return Err(ConfigError::Invalid(
                "vanity.file needs vanity.hosts: the file says which paths, hosts say for which names".into(),
            ));
        }
        if c.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("data_dir is empty".into()));
        }
        Ok(())
    }

    /// The data directory, absolute.
    pub fn data_dir(&self) -> PathBuf {
        absolute(&self.config.data_dir)
    }

    pub fn storage_path(&self) -> PathBuf {
        if self.config.storage.path.is_empty() {
            self.data_dir().join("storage")
        } else {
            absolute(Path::new(&self.config.storage.path))
        }
    }

    /// The S3 backend's settings, when it is the one configured.
    pub fn s3(&self) -> Option<berth_storage::S3Config> {
        let s = &self.config.storage.s3;
        (self.config.storage.backend == "s3").then(|| berth_storage::S3Config {
            bucket: s.bucket.clone(),
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            access_key: s.access_key.clone(),
            secret_key: s.secret_key.clone(),
            prefix: s.prefix.clone(),
            redirect: (s.redirect_secs > 0).then(|| std::time::Duration::from_secs(s.redirect_secs)),
        })
    }

    pub fn database_url(&self) -> String {
        if self.config.database.url.is_empty() {
            format!("sqlite://{}?mode=rwc", self.data_dir().join("berth.db").display())
        } else {
            self.config.database.url.clone()
        }
    }

    /// The report of `berth config check`.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let file = match &self.file {
            Some(p) => absolute(p).display().to_string(),
            None => "none (defaults, environment and flags only)".into(),
        };
        out.push_str(&format!("config file: {file}\n\n"));
        let table = toml::Table::try_from(&self.config).expect("config serialises");
        let mut l = Vec::new();
        leaves("", &table, &mut l);
        let width = l
            .iter()
            .map(|(k, v)| k.len() + value_text(k, v).len())
            .max()
            .unwrap_or(0)
            + 3;
        for (k, v) in &l {
            let shown = format!("{k} = {}", value_text(k, v));
            let src = self.sources.get(k).cloned().unwrap_or(Source::Default);
            out.push_str(&format!("{shown:<width$}  # {src} ({})\n", env_name(k)));
        }
        out.push_str("\ndata will live in:\n");
        let db = self.database_url();
        let db_text = match berth_db::Dialect::from_url(&db) {
            Ok(berth_db::Dialect::Sqlite) => format!("SQLite database {}", self.data_dir().join("berth.db").display()),
            Ok(d) => format!("{} at {}", d.name(), berth_db::redact(&db)),
            Err(_) => berth_db::redact(&db),
        };
        out.push_str(&format!("  metadata: {db_text}\n"));
        if self.config.redis.url.is_empty() {
            out.push_str("  sessions: in the database; login counts and caches in each replica\n");
        } else {
            out.push_str(&format!(
                "  sessions: Redis at {}, with login counts, caches and leases\n",
                berth_db::redact(&self.config.redis.url)
            ));
        }
        let mut local = vec![self.data_dir()];
        if self.config.storage.backend == "s3" {
            let s3 = &self.config.storage.s3;
            let at = if s3.endpoint.is_empty() {
                "AWS"
            } else {
                s3.endpoint.as_str()
            };
            out.push_str(&format!("  blobs:    S3 bucket {} at {at}\n", s3.bucket));
        } else {
            out.push_str(&format!(
                "  blobs:    filesystem at {}\n",
                self.storage_path().display()
            ));
            local.push(self.storage_path());
        }
        for p in local {
            if let Some(fs) = volatile_fs(&p) {
                out.push_str(&format!(
                    "  warning:  {} is on {fs}, which the kernel keeps in memory: its contents are lost on reboot\n",
                    p.display()
                ));
            }
        }
        out
    }
}

fn value_text(key: &str, v: &toml::Value) -> String {
    match (key, v) {
        ("database.url" | "redis.url", toml::Value::String(s)) => format!("{:?}", berth_db::redact(s)),
        (
            "auth.admin_password" | "auth.token_key" | "auth.secret_key" | "storage.s3.secret_key",
            toml::Value::String(s),
        ) if !s.is_empty() => "\"***\"".into(),
        _ => v.to_string(),
    }
}

pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// The type of the filesystem holding `p` if it keeps data only in memory.
pub fn volatile_fs(p: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut probe = p.to_path_buf();
    while !probe.exists() {
        probe = probe.parent()?.to_path_buf();
    }
    let probe = probe.canonicalize().ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mnt), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mnt = mnt.replace("\\040", " ");
        if probe.starts_with(&mnt) && best.as_ref().is_none_or(|(n, _)| mnt.len() >= *n) {
            best = Some((mnt.len(), fstype.to_string()));
        }
    }
    best.map(|(_, t)| t).filter(|t| t == "tmpfs" || t == "ramfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults() {
        let l = Loaded::load(None, env(&[]), &Flags::default()).unwrap();
        assert_eq!(l.config, Config::default());
        assert_eq!(l.sources["server.listen"], Source::Default);
        assert!(l.database_url().starts_with("sqlite://"));
        assert!(l.storage_path().ends_with("berth-data/storage"));
    }

    #[test]
    fn layers_override_in_order_and_remember_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("berth.toml");
        std::fs::write(
            &f,
            "data_dir = \"/srv/b\"\n[server]\nlisten = \"0.0.0.0:1\"\n[registry]\nupload_expiry_secs = 5\n",
        )
        .unwrap();
        let l = Loaded::load(
            Some(&f),
            env(&[
                ("BERTH_SERVER_LISTEN", "0.0.0.0:2"),
                ("BERTH_REGISTRY_UPLOAD_PURGE_INTERVAL_SECS", "7"),
                ("PATH", "x"),
            ]),
            &Flags {
                listen: Some("127.0.0.1:3".into()),
                data_dir: None,
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(l.config.server.listen, "127.0.0.1:3");
        assert_eq!(l.sources["server.listen"], Source::Flag("--listen".into()));
        assert_eq!(l.config.data_dir, PathBuf::from("/srv/b"));
        assert_eq!(l.sources["data_dir"], Source::File(f.clone()));
        assert_eq!(l.config.registry.upload_expiry_secs, 5);
        assert_eq!(l.config.registry.upload_purge_interval_secs, 7);
        assert_eq!(
            l.sources["registry.upload_purge_interval_secs"],
            Source::Env("BERTH_REGISTRY_UPLOAD_PURGE_INTERVAL_SECS".into())
        );
        let report = l.report();
        assert!(report.contains("server.listen = \"127.0.0.1:3\""), "{report}");
        assert!(report.contains("# flag --listen"), "{report}");
        assert!(report.contains("blobs:    filesystem at /srv/b/storage"), "{report}");
        assert!(report.contains("metadata: SQLite database /srv/b/berth.db"), "{report}");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Loaded::load(Some(Path::new("/nonexistent/berth.toml")), env(&[]), &Flags::default()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[storage]\nbackend = \"filesystem\"\nroot = \"/data\"\n").unwrap();
        let err = Loaded::load(Some(&f), env(&[]), &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `root`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        std::fs::write(&f, "[stroage]\npath = \"/data\"\n").unwrap();
        assert!(Loaded::load(Some(&f), env(&[]), &Flags::default()).is_err());
    }

    #[test]
    fn unknown_or_bad_environment_is_an_error() {
        let err = Loaded::load(None, env(&[("BERTH_STORAGE_ROOT", "/x")]), &Flags::default()).unwrap_err();
        assert!(
            err.to_string().contains("BERTH_STORAGE_ROOT is not a berth setting"),
            "{err}"
        );
        let err = Loaded::load(
            None,
            env(&[("BERTH_SERVER_SHUTDOWN_GRACE_SECS", "soon")]),
            &Flags::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
        assert!(Loaded::load(
            None,
            env(&[("BERTH_CONFIG", "x"), ("BERTH_TEST_FOO", "1")]),
            &Flags::default()
        )
        .is_ok());
    }

    #[test]
    fn invalid_values_are_errors() {
        for (k, v) in [
            ("BERTH_SERVER_LISTEN", "nowhere"),
            ("BERTH_STORAGE_BACKEND", "memory"),
            ("BERTH_DATABASE_URL", "oracle://x"),
            ("BERTH_REGISTRY_MAX_MANIFEST_BYTES", "1000"),
        ] {
            assert!(
                Loaded::load(None, env(&[(k, v)]), &Flags::default()).is_err(),
                "{k}={v} accepted"
            );
        }
    }

    #[test]
    fn s3_and_redis_settings_are_checked_and_their_secrets_not_printed() {
        let ok = Loaded::load(
            None,
            env(&[
                ("BERTH_STORAGE_BACKEND", "s3"),
                ("BERTH_STORAGE_S3_BUCKET", "images"),
                ("BERTH_STORAGE_S3_ENDPOINT", "https://s3.example.test"),
                ("BERTH_STORAGE_S3_ACCESS_KEY", "AKID"),
                ("BERTH_STORAGE_S3_SECRET_KEY", "very-secret-key"),
                ("BERTH_REDIS_URL", "redis://:redis-pass@10.0.0.5:6379/2"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        let report = ok.report();
        assert!(
            !report.contains("very-secret-key") && !report.contains("redis-pass"),
            "{report}"
        );
        assert!(
            report.contains("blobs:    S3 bucket images at https://s3.example.test"),
            "{report}"
        );
        assert!(
            report.contains("sessions: Redis at redis://:***@10.0.0.5:6379/2"),
            "{report}"
        );
        assert_eq!(ok.s3().unwrap().bucket, "images");

        for (bad, says) in [
            (vec![("BERTH_STORAGE_BACKEND", "s3")], "storage.s3.bucket is empty"),
            (
                vec![
                    ("BERTH_STORAGE_BACKEND", "s3"),
                    ("BERTH_STORAGE_S3_BUCKET", "b"),
                    ("BERTH_STORAGE_PATH", "/srv"),
                ],
                "storage.path is for the filesystem backend",
            ),
            // S3 settings with the default backend would leave blobs on local disk unnoticed.
            (
                vec![("BERTH_STORAGE_S3_BUCKET", "b")],
                "storage.backend is \"filesystem\"",
            ),
            (
                vec![
                    ("BERTH_STORAGE_BACKEND", "s3"),
                    ("BERTH_STORAGE_S3_BUCKET", "b"),
                    ("BERTH_STORAGE_S3_ACCESS_KEY", "k"),
                ],
                "go together",
            ),
            (vec![("BERTH_REDIS_URL", "http://cache:6379")], "redis.url"),
        ] {
            let err = Loaded::load(None, env(&bad), &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn list_settings_from_the_environment_and_settings_that_go_together() {
        let l = Loaded::load(
            None,
            env(&[
                ("BERTH_VANITY_HOSTS", "go.example.test, example.test"),
                ("BERTH_VANITY_FILE", "/etc/berth/vanity.yaml"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(l.config.vanity.hosts, ["go.example.test", "example.test"]);
        assert!(Loaded::load(None, env(&[("BERTH_VANITY_FILE", "/x.yaml")]), &Flags::default()).is_err());
        assert!(Loaded::load(None, env(&[("BERTH_TLS_CERT_FILE", "/c.pem")]), &Flags::default()).is_err());
        assert!(Loaded::load(
            None,
            env(&[("BERTH_TLS_REDIRECT_LISTEN", "0.0.0.0:80")]),
            &Flags::default()
        )
        .is_err());
    }

    #[test]
    fn the_database_password_is_not_printed() {
        let l = Loaded::load(
            None,
            env(&[("BERTH_DATABASE_URL", "postgres://u:hunter2@db/berth")]),
            &Flags::default(),
        )
        .unwrap();
        assert!(!l.report().contains("hunter2"));
    }
}
