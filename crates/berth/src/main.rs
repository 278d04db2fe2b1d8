use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth::config::{Flags, Loaded};
use clap::{Parser, Subcommand};

/// berth: a private registry for container images and Go import paths.
#[derive(Parser)]
#[command(name = "berth", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Configuration file (TOML). It must exist when named.
    #[arg(long, short = 'c', env = "BERTH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address and port to listen on [config: server.listen; env: BERTH_SERVER_LISTEN]
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Directory for the database and blobs [config: data_dir; env: BERTH_DATA_DIR]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS [config: tls.cert_file]
    #[arg(long, global = true)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) [config: tls.key_file]
    #[arg(long, global = true)]
    tls_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        #[command(flatten)]
        common: Common,
    },
    /// Remove what nothing references, while replicas keep serving.
    ///
    /// Takes the same configuration as `berth serve` and works on the same
    /// database and storage. Safe to run while any number of replicas push,
    /// pull and delete: nothing touched within --min-age is removed, and a
    /// push that depends on something removed fails instead of succeeding.
    Gc {
        #[command(flatten)]
        common: Common,
        /// Keep anything pushed or depended on more recently than this
        /// (e.g. 30m, 2h, 1d). Shorter windows make pushes in flight fail
        /// more often; they never lose what a push was told is stored.
        #[arg(long, default_value = "1h", value_parser = berth::gc::parse_duration)]
        min_age: Duration,
        /// Also delete untagged manifests older than --min-age (what Harbor
        /// calls "delete untagged artifacts").
        #[arg(long)]
        untagged: bool,
        /// Report what would be removed and how much space it holds; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Read every stored blob and manifest back and check it against its
    /// digest; report corrupt or missing content and metadata that points
    /// at content that is not stored. Changes nothing. Exits 1 if anything
    /// is wrong. Safe to run while replicas serve.
    Fsck {
        #[command(flatten)]
        common: Common,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Serve Go vanity import paths from a govanityurls vanity.yaml.
    Vanity {
        /// The import paths' host, e.g. example.com (default: the file's `host`, else the request's).
        #[arg(long)]
        host: Option<String>,
        /// Address and port to listen on.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: String,
        /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Where browsers without ?go-get=1 are sent.
        #[arg(long, default_value = "https://pkg.go.dev")]
        docs_url: String,
        /// The vanity.yaml file.
        #[arg(default_value = "vanity.yaml")]
        config: PathBuf,
    },
    /// Load any OCI registry and measure it, beside this machine's limits.
    Bench {
        /// The registry, e.g. http://127.0.0.1:5000
        url: String,
        /// User for the registry's token service.
        #[arg(long, short = 'u', env = "BERTH_BENCH_USER")]
        user: Option<String>,
        /// Password or robot secret.
        #[arg(long, short = 'p', env = "BERTH_BENCH_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Repository to push to (its project must exist).
        #[arg(long, default_value = "library/berth-bench")]
        repo: String,
        /// push, pull, manifest, image, tags, catalog, or all (comma-separated).
        #[arg(long, default_value = "all", value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Blob sizes for push and pull.
        #[arg(long, default_value = "1M,64M,1G", value_delimiter = ',', value_parser = berth::bench::parse_size)]
        sizes: Vec<u64>,
        /// Connections for the manifest scenario (comma-separated).
        #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
        concurrency: Vec<usize>,
        /// Seconds each request-rate measurement runs.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Clients pushing and pulling an image at once.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Layers of that image (5 to 20 is realistic).
        #[arg(long, default_value_t = 20)]
        layers: usize,
        /// Tags, and repositories, for the listing scenarios.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// A berth process whose peak memory to report.
        #[arg(long)]
        pid: Option<u32>,
        /// Also measure nginx serving the same bytes (the pull and request-rate limits).
        #[arg(long)]
        nginx: bool,
        /// Print JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Certificates for HTTPS.
    Tls {
        #[command(subcommand)]
        action: TlsCommand,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Make a local CA (DIR/ca.crt, DIR/ca.key; reused when present) and a
    /// server certificate for NAMEs (DIR/server.crt, DIR/server.key), and say
    /// how to make docker, podman, skopeo and Go trust the CA.
    Init {
        /// Where the files go.
        #[arg(long)]
        dir: PathBuf,
        /// Host names and IP addresses the server certificate is for.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print every value, where it came from,
    /// and where data will live.
    Check {
        #[command(flatten)]
        common: Common,
    },
}

fn load(common: &Common) -> Result<Loaded, String> {
    let flags = Flags {
        listen: common.listen.clone(),
        data_dir: common.data_dir.clone(),
        tls_cert: common.tls_cert.clone(),
        tls_key: common.tls_key.clone(),
    };
    Loaded::load(common.config.as_deref(), std::env::vars(), &flags).map_err(|e| e.to_string())
}

fn init_logging(cfg: &Loaded) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);

    if cfg.config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// govanityurls takes `-host NAME`; accept single-dash long options too.
fn normalized_args() -> Vec<String> {
    std::env::args()
        .map(|a| {
            let long = ["-host", "-listen", "-tls-cert", "-tls-key", "-docs-url"];
            match long.iter().find(|l| a == **l || a.starts_with(&format!("{l}="))) {
                Some(_) => format!("-{a}"),
                None => a,
            }
        })
        .collect()
}

/// glibc's defaults suit short programs, not a server that sees bursts.
/// Its mmap threshold rises to the size of the first large block freed, so
/// after one argon2 check (19 MiB) every smaller buffer came from the heap;
/// and each thread that allocates may get an arena of its own (up to eight
/// per core), each keeping what it freed. A burst of logins or uploads left
/// the process at its peak for good. Fixed here: blocks of 4 MiB or more are
/// mapped and given back when freed, heaps give back free tops above 8 MiB,
/// and two arenas serve all threads. Measured with `berth bench`: 8 clients
/// pushing and pulling 20-layer images peak at 37 MiB instead of 80, at the
/// same push rate. A 256 KiB mmap threshold cost a quarter of it.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter of the allocator; it is
    // called once, first thing in main, before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse_from(normalized_args());
    match cli.command {
        Command::Vanity {
            host,
            listen,
            tls_cert,
            tls_key,
            docs_url,
            config,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(
                    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none(),
                )
                .init();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(vanity(host, listen, tls_cert, tls_key, docs_url, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }

        Command::Bench {
            url,
            user,
            password,
            repo,
            scenarios,
            sizes,
            concurrency,
            seconds,
            clients,
            layers,
            count,
            pid,
            nginx,
            json,
        } => {
            let opts = berth::bench::Options {
                url,
                user,
                password,
                repo,
                scenarios,
                sizes,
                concurrency,
                duration: Duration::from_secs(seconds),
                clients,
                layers,
                count,
                pid,
                nginx,
                json,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(berth::bench::run(opts)) {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
                    } else {
                        println!();
                        for f in &report.figures {
                            println!("{}", berth::bench::line(f));
                        }
                        if let Some(m) = report.peak_rss_mib {
                            println!("peak RSS of the registry process: {m:.1} MiB");
                        }
                    }
                    let errors: u64 = report.figures.iter().map(|f| f.errors).sum();
                    if errors == 0 {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("error: {errors} requests failed");
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Tls {
            action: TlsCommand::Init { dir, names },
        } => match berth::tls::init(&dir, &names) {
            Ok(r) => {
                print!("{}", r.instructions());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Config {
            action: ConfigCommand::Check { common },
        } => match load(&common) {
            Ok(cfg) => {
                print!("{}", cfg.report());
                match check_writable(&cfg) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Fsck { common, json } => {
            let cfg = match load(&common) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&cfg);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(berth::gc::fsck(&cfg, json)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Gc {
            common,
            min_age,
            untagged,
            dry_run,
            json,
        } => {
            let cfg = match load(&common) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&cfg);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let options = berth_core::GcOptions {
                min_age,
                untagged,
                dry_run,
                upload_max_age: Duration::from_secs(cfg.config.registry.upload_expiry_secs),
            };
            match rt.block_on(berth::gc::run(&cfg, &options, json)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { common } => {
            let cfg = match load(&common) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&cfg);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The storage path must be writable, or creatable in a writable parent.
fn check_writable(cfg: &Loaded) -> Result<(), String> {
    for p in [cfg.data_dir(), cfg.storage_path()] {
        let mut probe = p.clone();
        while !probe.exists() {
            match probe.parent() {
                Some(parent) => probe = parent.to_path_buf(),
                None => break,
            }
        }
        let meta = std::fs::metadata(&probe).map_err(|e| format!("{}: {e}", probe.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", probe.display()));
        }
        let test = probe.join(format!(".berth-check-{}", std::process::id()));
        std::fs::write(&test, b"").map_err(|e| format!("storage path {} is not writable: {e}", probe.display()))?;
        let _ = std::fs::remove_file(test);
    }
    Ok(())
}

async fn serve(cfg: Loaded) -> anyhow::Result<()> {
    if let Some(fs) = berth::config::volatile_fs(&cfg.storage_path()) {
        tracing::warn!(path = %cfg.storage_path().display(), fs, "storage is on a filesystem kept in memory; data is lost on reboot");
    }
    let app = berth::build(&cfg).await?;
    let addr = &cfg.config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %listener.local_addr()?,
        data = %cfg.data_dir().display(),
        storage = %app.registry.store().describe(),
        database = %berth_db::redact(&cfg.database_url()),
        "berth is serving"
    );
    let r = &cfg.config.registry;
    berth::spawn_upload_purger(
        app.registry.clone(),
        app.accounts.shared().clone(),
        Duration::from_secs(r.upload_purge_interval_secs),
        Duration::from_secs(r.upload_expiry_secs),
    );
    // Background jobs (garbage collection started through the API): every
    // replica polls, one claims each job.
    std::sync::Arc::new(
        berth_core::jobs::Runner::new(
            app.registry.clone(),
            berth_core::GcOptions {
                min_age: Duration::from_secs(3600),
                untagged: false,
                dry_run: false,
                upload_max_age: Duration::from_secs(r.upload_expiry_secs),
            },
        )
        .with_replication(app.replicator.clone())
        .with_webhooks(app.webhooks.clone()),
    )
    .spawn(Duration::from_secs(2));
    berth::spawn_replication_events(app.replicator.clone());
    app.webhooks.clone().spawn(Duration::from_secs(1));
    let grace = Duration::from_secs(cfg.config.server.shutdown_grace_secs);
    let tls = &cfg.config.tls;
    if tls.cert_file.is_empty() {
        berth::serve(listener, app.router, berth::shutdown_signal(), grace).await?;
    } else {
        let resolver = berth::tls::ReloadingCert::new(
            std::path::Path::new(&tls.cert_file),
            std::path::Path::new(&tls.key_file),
        )?;
        resolver.watch(Duration::from_secs(5));
        if !tls.redirect_listen.is_empty() {
            let port = listener.local_addr()?.port();
            let plain = tokio::net::TcpListener::bind(&tls.redirect_listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", tls.redirect_listen))?;
            tracing::info!(listen = %plain.local_addr()?, "redirecting plain HTTP to HTTPS");
            tokio::spawn(async move {
                let _ = axum::serve(plain, berth::redirect_to_https(port)).await;
            });
        }
        berth::serve_tls(
            listener,
            app.router,
            berth::tls::server_config(resolver),
            berth::shutdown_signal(),
            grace,
        )
        .await?;
    }

    app.registry.db().close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn vanity(
    host: Option<String>,
    listen: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    docs_url: String,
    config: PathBuf,
) -> anyhow::Result<()> {
    let v = berth_http::vanity::Vanity::load(&config, host, docs_url).map_err(anyhow::Error::msg)?;
    v.watch(Duration::from_secs(2));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, file = %config.display(), paths = v.config().paths.len(), "berth vanity is serving");
    let router = berth_http::vanity::router(v);
    let grace = Duration::from_secs(10);
    match (tls_cert, tls_key) {
        (Some(c), Some(k)) => {
            let resolver = berth::tls::ReloadingCert::new(&c, &k)?;
            resolver.watch(Duration::from_secs(5));
            berth::serve_tls(
                listener,
                router,
                berth::tls::server_config(resolver),
                berth::shutdown_signal(),
                grace,
            )
            .await?
        }
        _ => berth::serve(listener, router, berth::shutdown_signal(), grace).await?,
    }
    Ok(())
}
