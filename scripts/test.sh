#!/usr/bin/env bash
# Runs every berth test: formatting, lints, unit, database, API, black-box and
# crash tests. First installs what the tests drive (skopeo, podman, buildah,
# Go, git, nginx, redis-server, distribution (docker-registry), Chromium,
# the oras Python client, kubernetes-validate, playwright-core from npm, and
# s3s-fs, an S3 server built once from crates.io) when missing, so it works on a fresh machine;
# running it again installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v podman >/dev/null 2>&1 || missing+=(podman uidmap)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import oras.client' >/dev/null 2>&1; then
  echo "==> installing the oras Python client"
  python3 -m pip install --quiet --disable-pip-version-check oras
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "==> installing kubernetes-validate"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
fi
if [ ! -d crates/berth/tests/browser/node_modules/playwright-core ]; then
  echo "==> installing playwright-core for the browser tests"
  (cd crates/berth/tests/browser && npm ci --no-audit --no-fund --silent)
fi
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "==> building s3s-fs, the S3 server the storage tests run against (once)"
  cargo install --quiet --locked --features binary s3s-fs@0.14.1
fi

# The database suite runs on PostgreSQL and MariaDB as well as SQLite. Start
# them if this machine has them installed but not running.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  echo "==> starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if command -v mariadbd >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
  echo "==> starting MariaDB"
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && break; sleep 1; done
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
