//! Runs the built `berth` binary as a user would, and finds the tools that
//! black-box tests drive (skopeo, podman, oras).

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");
/// The first admin password every test server starts with.
pub const ADMIN_PASSWORD: &str = "Berth-Test-Passw0rd";

/// `user:password` for skopeo's and podman's `--creds`.
pub fn admin_creds() -> String {
    format!("admin:{ADMIN_PASSWORD}")
}

/// A bearer token for `scopes` (`repository:library/x:pull,push`), as admin.
pub async fn admin_token(base: &str, scopes: &[&str]) -> String {
    let mut url = format!("{base}/service/token?service=berth");
    for s in scopes {
        url.push_str(&format!("&scope={s}"));
    }
    let r = reqwest::Client::new()
        .get(url)
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "token request");
    let v: serde_json::Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// A client that sends `Authorization: Bearer <token>` on every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder().default_headers(h).build().unwrap()
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when `tool` runs. Outside CI a missing tool skips the test loudly;
/// in CI it fails the test.
pub fn have(tool: &str, version_arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if in_ci() {
            panic!("{tool} is required in CI but is not installed (the test command installs it)");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED: {tool} is not installed; run the README's test command to install it !!!!!!!!\n"
        );
    }
    ok
}

pub fn have_oras() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import oras.client"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if in_ci() {
            panic!("the oras Python client is required in CI but is not installed");
        }
        eprintln!("\n!!!!!!!! SKIPPED: python oras is not installed (pip install oras) !!!!!!!!\n");
    }
    ok
}

/// Runs a command, panicking with its output when it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

/// A berth server process on a free loopback port.
pub struct Berth {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Berth {
    /// Starts `berth serve` with `--data-dir data_dir` and waits until it serves.
    pub fn start(data_dir: &Path) -> Berth {
        Berth::start_with(data_dir, &[], &[])
    }

    pub fn start_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Berth {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.with_extension(format!(
            "log.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let logfile = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BERTH);
        cmd.arg("serve");
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(logfile);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn berth");
        let mut b = Berth {
            child,
            addr: String::new(),
            data_dir: data_dir.to_path_buf(),
            log,
        };
        b.addr = b.wait_for_listen();
        b
    }

    fn wait_for_listen(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("berth is serving")) {
                let start = line.find("listen=").expect("listen field") + "listen=".len();
                let addr: String = line[start..].chars().take_while(|c| !c.is_whitespace()).collect();
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("berth exited ({status}) before serving:\n{text}");
            }
            assert!(Instant::now() < deadline, "berth did not start within 60 s:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        run(Command::new("kill").args(["-TERM", &self.pid().to_string()]));
        self.child.wait().unwrap()
    }

    /// Peak resident memory of the process so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs berth with arguments and returns (success, stdout, stderr).
pub fn berth(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(BERTH);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let mut err = String::new();
    let _ = (&out.stderr[..]).read_to_string(&mut err);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        err,
    )
}

/// Writes the test image layout (tags v1 and multi) and returns the v1 digest.
pub fn make_image(dir: &Path, layers: usize) -> String {
    make_image_sized(dir, layers, 1000)
}

/// As [`make_image`], with layer i of v1 holding `unit * (i + 1)` random bytes.
pub fn make_image_sized(dir: &Path, layers: usize, unit: usize) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mkimage.py");
    run(Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(layers.to_string())
        .arg(unit.to_string()))
    .trim()
    .to_string()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A private Redis server on a Unix socket in `dir`: no port to collide
/// with, nothing kept on disk. Stopped when dropped.
pub struct RedisServer {
    child: Child,
    pub socket: PathBuf,
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("redis.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not open {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, socket }
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Signs in to the portal API; returns the session cookie and CSRF token.
pub async fn portal_login(base: &str) -> (String, String) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/c/login"))
        .form(&[("principal", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "portal login on {base}");
    let sid = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = resp.headers()["x-harbor-csrf-token"].to_str().unwrap().to_string();
    (sid, csrf)
}
