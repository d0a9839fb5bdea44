#!/usr/bin/env bash
# Sourced by test.sh and bench.sh: installs what is missing and starts two PostgreSQL clusters (primary,
# backup), two NATS servers with JetStream (primary, secondary) and two Redis servers (primary, standby)
# on free loopback ports in a
# temporary directory, exports their URLs as SOCIALNET_TEST_*, and stops them when the caller exits.

log() { printf '\n== %s\n' "$*" >&2; }

# --- install what is missing -------------------------------------------------------------------------
missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server redis-tools)
# The operator's binary-level test drives its fake Kubernetes API with the real kubectl.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
# The shell scripts (the kind e2e among them, which cannot run here) are checked with shellcheck.
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
# The contract check (scripts/contract.sh) installs Redocly CLI with npm and its Python tools in a venv.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PG_BIN="${SOCIALNET_PG_BIN:-/usr/lib/postgresql/15/bin}"
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL 15 server binaries not found in $PG_BIN" >&2; exit 1; }
# Read by test.sh, which sources this file.
# shellcheck disable=SC2034
command -v cargo-nextest >/dev/null 2>&1 || cargo nextest --version >/dev/null 2>&1 || NO_NEXTEST=1

# --- servers ---------------------------------------------------------------------------------------------
RUN_DIR="$(mktemp -d /tmp/socialnet-test.XXXXXX)"
chmod 755 "$RUN_DIR"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
  set +e
  for d in "$RUN_DIR"/pg-*/data; do [ -d "$d" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1; done
  for f in "$RUN_DIR"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  sleep 0.2
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

start_pg() { # name -> prints port. SOCIALNET_PG_EXTRA_OPTS adds server settings (e.g. "-c log_checkpoints=on") for experiments.
  local dir="$RUN_DIR/$1" port; port=$(free_port)
  mkdir -p "$dir"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  as_pg "$PG_BIN/initdb" -A trust -U postgres --no-sync -D "$dir/data" >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=400 ${SOCIALNET_PG_EXTRA_OPTS:-}" start >/dev/null
  echo "$port"
}
start_nats() { # name -> prints port
  local dir="$RUN_DIR/$1" port; port=$(free_port)
  mkdir -p "$dir"
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir/js" >"$dir/log" 2>&1 &
  # This runs in a $(…) subshell: remember the pid in a file, not in a variable the caller never sees.
  echo $! > "$RUN_DIR/$1.pid"
  wait_port "$port" >&2
  echo "$port"
}

log "starting servers in $RUN_DIR"
PG1=$(start_pg pg-primary); PG2=$(start_pg pg-backup)
NATS1=$(start_nats nats-primary); NATS2=$(start_nats nats-secondary)
start_redis() { # name -> prints port
  local port; port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$RUN_DIR/$1.pid" --logfile "$RUN_DIR/$1.log" >/dev/null
  wait_port "$port" >&2
  echo "$port"
}
REDIS=$(start_redis redis-primary); REDIS2=$(start_redis redis-standby)

# A Redis Cluster of 3 masters with one replica each (the scale-out target), and a 3-node NATS cluster
# with JetStream (replicated streams).
# A cluster node also listens on its port + 10000 (the cluster bus): both must be free and valid.
free_bus_port() { python3 -c '
import random, socket
while True:
    p = random.randint(20000, 30000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass'; }
start_redis_node() { # name -> prints port
  local port; port=$(free_bus_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --cluster-enabled yes --cluster-config-file "$RUN_DIR/$1.nodes.conf" --cluster-node-timeout 2000 \
    --dir "$RUN_DIR" --dbfilename "$1.rdb" --repl-diskless-sync yes --repl-diskless-sync-delay 0 \
    --pidfile "$RUN_DIR/$1.pid" --logfile "$RUN_DIR/$1.log" >/dev/null
  wait_port "$port" >&2
  echo "$port"
}
start_redis_cluster() { # -> prints comma-separated redis:// URLs of the six nodes
  local ports=() nodes=() urls=() p
  for i in 1 2 3 4 5 6; do ports+=("$(start_redis_node "redis-cluster-$i")"); done
  for p in "${ports[@]}"; do nodes+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$RUN_DIR/redis-cluster-create.log" 2>&1 \
    || { cat "$RUN_DIR/redis-cluster-create.log" >&2; return 1; }
  for p in "${ports[@]}"; do
    for _ in $(seq 1 200); do
      redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
      sleep 0.05
    done
    urls+=("redis://127.0.0.1:$p")
  done
  # A replica that never finished its first sync would not be promoted.
  for _ in $(seq 1 200); do
    local up=0
    for p in "${ports[@]}"; do redis-cli -p "$p" info replication | grep -q 'master_link_status:up' && up=$((up + 1)); done
    [ "$up" -ge 3 ] && break
    sleep 0.05
  done
  (IFS=,; echo "${urls[*]}")
}
start_nats_cluster() { # -> prints comma-separated nats:// URLs of the three nodes
  local client=() route=() routes urls=() i
  for i in 1 2 3; do client+=("$(free_port)"); route+=("$(free_port)"); done
  routes=$(printf 'nats://127.0.0.1:%s,' "${route[@]}"); routes=${routes%,}
  for i in 0 1 2; do
    local dir="$RUN_DIR/nats-cluster-$((i + 1))"
    mkdir -p "$dir"
    nats-server -a 127.0.0.1 -p "${client[$i]}" -n "n$((i + 1))" -js -sd "$dir/js" \
      --cluster_name socialnet --cluster "nats://127.0.0.1:${route[$i]}" --routes "$routes" >"$dir/log" 2>&1 &
    echo $! > "$RUN_DIR/nats-cluster-$((i + 1)).pid"
  done
  for i in 0 1 2; do wait_port "${client[$i]}" >&2; urls+=("nats://127.0.0.1:${client[$i]}"); done
  (IFS=,; echo "${urls[*]}")
}
REDIS_CLUSTER=$(start_redis_cluster)
NATS_CLUSTER=$(start_nats_cluster)

export SOCIALNET_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG1/postgres"
export SOCIALNET_TEST_PG_BACKUP_URL="postgres://postgres@127.0.0.1:$PG2/postgres"
export SOCIALNET_TEST_NATS_URL="nats://127.0.0.1:$NATS1"
export SOCIALNET_TEST_NATS_SECONDARY_URL="nats://127.0.0.1:$NATS2"
export SOCIALNET_TEST_REDIS_URL="redis://127.0.0.1:$REDIS"
export SOCIALNET_TEST_REDIS_STANDBY_URL="redis://127.0.0.1:$REDIS2"
export SOCIALNET_TEST_REDIS_CLUSTER_URLS="$REDIS_CLUSTER"
export SOCIALNET_TEST_NATS_CLUSTER_URLS="$NATS_CLUSTER"
export SOCIALNET_TEST_TMP="$RUN_DIR"
export SOCIALNET_PG_BIN="$PG_BIN"
env | grep '^SOCIALNET_TEST_' | sort >&2

