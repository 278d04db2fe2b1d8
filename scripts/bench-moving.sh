#!/usr/bin/env bash
# Measures how fast content moves between two berth servers on this machine:
# a pull-based replication run of one image with a SIZE_MIB layer, and the
# first (through to upstream) and second (from the cache) pull of that layer
# through a proxy cache project. Beside them, sha256sum of the same file
# (one core) and a plain pull of it from the upstream, as the limits.
#
#   scripts/bench-moving.sh [BERTH_BINARY] [SIZE_MIB]
#
# Prints one line per figure, in MB/s (10^6 bytes per second).
set -euo pipefail
BIN=${1:-target/release/berth}
SIZE_MIB=${2:-1024}
PW='Bench-Passw0rd-1'
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

start() { # name: starts a server; its base URL goes into $WORK/name.url
  local dir="$WORK/$1"
  mkdir -p "$dir"
  BERTH_ADMIN_PASSWORD=$PW RUST_LOG=warn,berth=info NO_COLOR=1 \
    "$BIN" serve --listen 127.0.0.1:0 --data-dir "$dir" >/dev/null 2>"$dir.log" &
  echo $! >"$dir.pid"
  for _ in $(seq 1 300); do
    if grep -q "berth is serving" "$dir.log" 2>/dev/null; then
      sed -n 's/.*listen=\([^ ]*\).*/http:\/\/\1/p' "$dir.log" | head -1 >"$dir.url"
      return
    fi
    sleep 0.1
  done
  echo "berth did not start: $(cat "$dir.log")" >&2
  exit 1
}

now() { date +%s.%N; }
# CPU seconds (user + system) a server has used so far.
cpu() { python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" "$(cat "$WORK/$1.pid")"; }
cpus() { python3 -c "import sys; a0,a1,b0,b1,g=map(float,sys.argv[1:]); print(f'(CPU-s per GiB: upstream {(a1-a0)/g:.2f}, this side {(b1-b0)/g:.2f})')" "$@"; }
rate() { python3 -c "import sys; b,t0,t1=map(float,sys.argv[1:]); print(f'{b/(t1-t0)/1e6:.0f}')" "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
token() { curl -sf -u "admin:$PW" "$1/service/token?service=berth&scope=repository:$2:pull,push" | json "['token']"; }
api() { # base method path [json]
  curl -sf -u "admin:$PW" -X "$2" -H 'content-type: application/json' ${4:+--data "$4"} -D "$WORK/resp.head" -o "$WORK/resp.body" "$1/api/v2.0$3"
  sed -n 's/^[Ll]ocation: .*\/\([0-9]*\)\r$/\1/p' "$WORK/resp.head"
}

start a
start b
A=$(cat "$WORK/a.url")
B=$(cat "$WORK/b.url")
LAYER="$WORK/layer"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$LAYER"
BYTES=$(stat -c %s "$LAYER")
# SHA-256 on one core as OpenSSL does it (SHA-NI where the CPU has it), from the page cache.
cat "$LAYER" >/dev/null
t0=$(now)
DIGEST=sha256:$(python3 -c '
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    while b := f.read(1 << 20):
        h.update(b)
print(h.hexdigest())' "$LAYER")
t1=$(now)
echo "SHA-256, one core (OpenSSL):    $(rate "$BYTES" "$t0" "$t1") MB/s"

# The image at A: the layer, a config, a manifest.
TA=$(token "$A" library/big)
# POST, then PUT of the whole file (curl -T streams it from disk).
LOC=$(curl -sf -H "authorization: Bearer $TA" -X POST -D - -o /dev/null "$A/v2/library/big/blobs/uploads/" |
  sed -n 's/^[Ll]ocation: *\(.*\)\r$/\1/p')
curl -sf -H "authorization: Bearer $TA" -T "$LAYER" "$A$LOC?digest=$DIGEST" -o /dev/null
CONFIG='{"architecture":"amd64","os":"linux"}'
CDIG=sha256:$(printf %s "$CONFIG" | sha256sum | cut -d' ' -f1)
curl -sf -H "authorization: Bearer $TA" --data-binary "$CONFIG" -X POST \
  "$A/v2/library/big/blobs/uploads/?digest=$CDIG" -o /dev/null
MANIFEST="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$CDIG\",\"size\":${#CONFIG}},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$DIGEST\",\"size\":$BYTES}]}"
curl -sf -H "authorization: Bearer $TA" -H 'content-type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary "$MANIFEST" -X PUT "$A/v2/library/big/manifests/v1" -o /dev/null

# Twice: the first read brings the blob (written with O_DIRECT) into the page cache.
curl -sf -H "authorization: Bearer $TA" "$A/v2/library/big/blobs/$DIGEST" -o /dev/null
t0=$(now); curl -sf -H "authorization: Bearer $TA" "$A/v2/library/big/blobs/$DIGEST" -o /dev/null; t1=$(now)
echo "plain pull from upstream (curl): $(rate "$BYTES" "$t0" "$t1") MB/s"

# Replication A -> B, pull-based.
REG=$(api "$B" POST /registries "{\"name\":\"a\",\"type\":\"harbor\",\"url\":\"$A\",\"credential\":{\"access_key\":\"admin\",\"access_secret\":\"$PW\"}}")
POL=$(api "$B" POST /replication/policies "{\"name\":\"from-a\",\"src_registry\":{\"id\":$REG},\"filters\":[{\"type\":\"name\",\"value\":\"library/big\"}]}")
GIB=$(python3 -c "print($BYTES / (1 << 30))")
ca0=$(cpu a); cb0=$(cpu b)
t0=$(now)
EXE=$(api "$B" POST /replication/executions "{\"policy_id\":$POL}")
while :; do
  api "$B" GET "/replication/executions/$EXE" >/dev/null || { cat "$WORK/resp.head" "$WORK/resp.body" >&2; exit 1; }
  status=$(json "['status']" <"$WORK/resp.body")
  [ "$status" != InProgress ] && break
  sleep 0.05
done
t1=$(now)
[ "$status" = Succeed ] || { echo "replication ended $status: $(cat "$WORK/resp.body")" >&2; exit 1; }
echo "replication run (pull-based):   $(rate "$BYTES" "$t0" "$t1") MB/s $(cpus "$ca0" "$(cpu a)" "$cb0" "$(cpu b)" "$GIB")"

# Proxy cache: first pull goes to upstream and is stored on the way.
api "$B" POST /projects "{\"project_name\":\"hub\",\"registry_id\":$REG}" >/dev/null
TB=$(token "$B" hub/library/big)
ca0=$(cpu a); cb0=$(cpu b)
t0=$(now); curl -sf -H "authorization: Bearer $TB" "$B/v2/hub/library/big/blobs/$DIGEST" -o /dev/null; t1=$(now)
echo "proxy cache, first pull:        $(rate "$BYTES" "$t0" "$t1") MB/s $(cpus "$ca0" "$(cpu a)" "$cb0" "$(cpu b)" "$GIB")"
# The manifest, which is cached once its layer is (it is, by the pull above).
curl -sf -H "authorization: Bearer $TB" -H 'accept: application/vnd.oci.image.manifest.v1+json' \
  "$B/v2/hub/library/big/manifests/v1" -o /dev/null
for _ in $(seq 1 600); do
  curl -sf -H "authorization: Bearer $TB" "$B/v2/hub/library/big/tags/list" | grep -q v1 && break
  sleep 0.1
done
t0=$(now); curl -sf -H "authorization: Bearer $TB" "$B/v2/hub/library/big/blobs/$DIGEST" -o /dev/null; t1=$(now)
echo "proxy cache, second pull:       $(rate "$BYTES" "$t0" "$t1") MB/s"
