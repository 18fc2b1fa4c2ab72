#!/usr/bin/env bash
# Login rate of one node on SQLite, one node on PostgreSQL and two nodes on the same
# PostgreSQL: PAP + TOTP in append mode (password followed by the code in User-Password).
#
#   bench/nodes-login.sh [--runs R] [--requests N] [--concurrency C] [--rounds K]
#                        [--users U] [--pool P] [--pg-opt OPTION]... [--node-cpu F] [--keep]
#   (defaults: 5 runs, 3000 logins per run, 64 in flight, $6$ with 5000 rounds)
#
# --node-cpu F (root): each node runs in a cgroup of its own limited to F of one core (CFS
# quota, e.g. 0.5), as if every node had a machine of that size to itself; PostgreSQL and
# radius-load are not limited. Without it the nodes, PostgreSQL and the load share this
# machine's cores, so a second node can only add what the machine has left.
#
# Users: `bench-users` makes U users, each with its own random password, `$6$` SHA-512-crypt
# hash (K rounds, own salt) and own TOTP secret, imported into each database with
# `portcullis user import`. Nodes: release `portcullis serve`, one client in append mode,
# replay protection, throttles and one audit record per decision on; the PostgreSQL nodes
# share one database and the master key, each with a pool of P connections (default 8).
# PostgreSQL is a private server (bench/lib/common.sh) with its default durability (fsync
# on) unless --pg-opt says otherwise (e.g. --pg-opt synchronous_commit=off).
# Load: `radius-load`, closed loop, C requests in flight in all, every request a user not
# yet sent in that TOTP step (so every code is fresh), every reply verified; for two nodes
# the requests alternate between them (C/2 in flight each). A warm-up run per row, then R
# rounds, each running the three rows in turn (so they share the machine's noise); medians.
# CPU: user + system seconds from /proc of each node, of all PostgreSQL processes and of
# radius-load over each run. Loopback only; everything goes on exit (--keep keeps the
# temporary directory). BIN=DIR runs the binaries in DIR instead of building them.
set -euo pipefail

RUNS=5
REQUESTS=3000
CONCURRENCY=64
ROUNDS=5000
USERS=
POOL=8
PGOPTS=()
KEEP=
NODE_CPU=
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --requests) REQUESTS="$2"; shift 2 ;;
        --concurrency) CONCURRENCY="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --users) USERS="$2"; shift 2 ;;
        --pool) POOL="$2"; shift 2 ;;
        --pg-opt) PGOPTS+=(-c "$2"); shift 2 ;;
        --node-cpu) NODE_CPU="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 50 ] || { echo "--runs must be 1..50" >&2; exit 2; }
[ "$REQUESTS" -ge 10 ] && [ "$REQUESTS" -le 100000 ] || { echo "--requests must be 10..100000" >&2; exit 2; }
# The two PostgreSQL rows of a round take 2N users from that database's ledger, and a
# 30-second step spans a few rounds; radius-load waits for the next step when short.
[ -n "$USERS" ] || USERS=$((REQUESTS * 6))
if [ -n "$NODE_CPU" ]; then
    # The quota in microseconds per 100 ms period: 0.05 to 2 cores.
    QUOTA_US=$(awk -v f="$NODE_CPU" 'BEGIN { if (f + 0 >= 0.05 && f + 0 <= 2) printf "%d", f * 100000 }')
    [ -n "$QUOTA_US" ] || { echo "--node-cpu must be a share of a core from 0.05 to 2 (e.g. 0.5)" >&2; exit 2; }
    [ "$(id -u)" = 0 ] || { echo "--node-cpu needs root (it makes cgroups)" >&2; exit 2; }
    if [ -w /sys/fs/cgroup/cpu ] && [ -e /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        CGROUP_ROOT=/sys/fs/cgroup/cpu          # cgroup v1, cpu controller
    elif grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        CGROUP_ROOT=/sys/fs/cgroup              # cgroup v2
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
    else
        echo "--node-cpu: no writable cgroup cpu controller here (/sys/fs/cgroup/cpu or cgroup v2)" >&2; exit 2
    fi
fi
CGROUPS=()

log() { printf '[nodes-login] %s\n' "$*" >&2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. bench/lib/common.sh
# BIN=DIR runs the binaries in DIR (portcullis, radius-load, bench-users) instead of building.
if [ -z "${BIN:-}" ]; then
    CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build -q --release -p portcullis-server -p portcullis-bench
    BIN="$ROOT/target/release"
fi
WORK=$(mktemp -d /tmp/portcullis-nodes.XXXXXX)
NODE_PIDS=()
cleanup() {
    local p
    for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    pg_stop
    for p in "${CGROUPS[@]}"; do rmdir "$p" 2>/dev/null || true; done
    if [ -n "$KEEP" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SECRET="nodes-secret-0123456789"
log "making $USERS users (\$6\$, $ROUNDS rounds, own TOTP secret each)"
"$BIN/bench-users" --count "$USERS" --rounds "$ROUNDS" --out "$WORK/users" >/dev/null
log "starting a private PostgreSQL"
pg_start "$WORK/pg" "${PGOPTS[@]}"
PG_URL=$(pg_createdb bench)

# limit_cpu NAME PID: PID (all its threads) into a cgroup of its own, QUOTA_US per 100 ms.
limit_cpu() {
    local dir=$CGROUP_ROOT/portcullis-bench-$$-$1
    mkdir "$dir"
    CGROUPS+=("$dir")
    if [ -e "$dir/cpu.cfs_quota_us" ]; then
        echo 100000 >"$dir/cpu.cfs_period_us"
        echo "$QUOTA_US" >"$dir/cpu.cfs_quota_us"
    else
        echo "$QUOTA_US 100000" >"$dir/cpu.max"
    fi
    echo "$2" >"$dir/cgroup.procs"
}

# node NAME STORE_URL: a config, the users imported (once per database), the node started;
# sets NODE_ADDR and NODE_PID.
IMPORTED=" "
node() {
    local name=$1 url=$2 cfg=$WORK/$1.toml i
    cat >"$cfg" <<EOF
[store]
url = "$url"
max_connections = $POOL

[secrets]
key_file = "$WORK/master.key"

[radius]
listen = ["127.0.0.1:$(free_port udp)"]

[[radius.clients]]
name = "bench"
address = "127.0.0.1/32"
secret = "$SECRET"
tenant = "bench"
mode = "append"
EOF
    if [[ "$IMPORTED" != *" $url "* ]]; then
        "$BIN/portcullis" --config "$cfg" tenant add bench >/dev/null
        "$BIN/portcullis" --config "$cfg" user import --tenant bench "$WORK/users/portcullis.csv" >/dev/null
        IMPORTED="$IMPORTED$url "
    fi
    PORTCULLIS_LOG=warn "$BIN/portcullis" --config "$cfg" serve >"$WORK/$name.log" 2>&1 &
    NODE_PID=$!
    NODE_PIDS+=("$NODE_PID")
    [ -z "$NODE_CPU" ] || limit_cpu "$name" "$NODE_PID"
    for i in $(seq 200); do
        NODE_ADDR=$(sed -n 's/^radius: listening on \([0-9.:]*\).*/\1/p' "$WORK/$name.log" | head -1)
        [ -n "$NODE_ADDR" ] && return 0
        sleep 0.05
    done
    log "$name did not start; its log:"
    cat "$WORK/$name.log" >&2
    exit 1
}
node sqlite "sqlite://$WORK/bench.db"; SQ_ADDR=$NODE_ADDR; SQ_PID=$NODE_PID
node pg-a "$PG_URL"; PA_ADDR=$NODE_ADDR; PA_PID=$NODE_PID
node pg-b "$PG_URL"; PB_ADDR=$NODE_ADDR; PB_PID=$NODE_PID

kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
# The CPU ticks of a shell's reaped children (radius-load, once waited for).
children_ticks() { proc_field "/proc/$1/stat" '{ sub(/^.*\) /, ""); print $14 + $15 }'; }

# run ROW N: one radius-load run of the row, a result line appended to $WORK/results:
# row rps p50 p99 sent accepts lost cpu_node_a cpu_node_b cpu_pg cpu_load (seconds)
run() {
    local row=$1 n=$2 servers ledger pids
    case "$row" in
        sqlite-1) servers=(--server "$SQ_ADDR"); ledger=sqlite; pids=("$SQ_PID") ;;
        postgres-1) servers=(--server "$PA_ADDR"); ledger=pg; pids=("$PA_PID") ;;
        postgres-2) servers=(--server "$PA_ADDR" --server "$PB_ADDR"); ledger=pg; pids=("$PA_PID" "$PB_PID") ;;
    esac
    local a0 b0 g0 l0 a1 b1 g1 l1 out me=$BASHPID
    a0=$(cpu_ticks "${pids[0]}"); b0=$(cpu_ticks "${pids[1]:-0}"); g0=$(pg_cpu_ticks); l0=$(children_ticks "$me")
    out=$("$BIN/radius-load" "${servers[@]}" --secret "$SECRET" --users "$WORK/users/users.txt" \
        --mode append -n "$n" -c "$CONCURRENCY" --timeout-ms 5000 \
        --ledger "$WORK/ledger.$ledger" --wait-for-step --kv)
    a1=$(cpu_ticks "${pids[0]}"); b1=$(cpu_ticks "${pids[1]:-0}"); g1=$(pg_cpu_ticks); l1=$(children_ticks "$me")
    # radius-load waits for the next TOTP step before it starts when too few users are
    # free; that wait is outside its elapsed time and costs no CPU.
    echo "$row $(kv rps "$out") $(kv p50_ms "$out") $(kv p99_ms "$out") $(kv sent "$out") $(kv accepts "$out") $(kv timeouts "$out") $(kv elapsed_s "$out")" \
        "$(awk -v t="$CLK_TCK" -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v g=$((g1 - g0)) -v l=$((l1 - l0)) \
            'BEGIN { printf "%.2f %.2f %.2f %.2f", a / t, b / t, g / t, l / t }')"
}

ROWS=(sqlite-1 postgres-1 postgres-2)
log "warm-up"
for row in "${ROWS[@]}"; do run "$row" $((REQUESTS / 5 > 10 ? REQUESTS / 5 : 10)) >/dev/null; done
: >"$WORK/results"
printf '%-11s %3s %8s %8s %8s %6s %6s %4s %7s %7s %7s %7s %7s\n' \
    row run logins/s p50_ms p99_ms sent accept lost node_a_s node_b_s pg_s load_s wall_s
for r in $(seq "$RUNS"); do
    for row in "${ROWS[@]}"; do
        line=$(run "$row" "$REQUESTS")
        echo "$line" >>"$WORK/results"
        set -- $line
        printf '%-11s %3s %8s %8s %8s %6s %6s %4s %7s %7s %7s %7s %7s\n' \
            "$1" "$r" "$2" "$3" "$4" "$5" "$6" "$7" "$9" "${10}" "${11}" "${12}" "$8"
    done
done

echo
echo "nodes-login: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "append mode (\$6\$ $ROUNDS rounds + TOTP), $REQUESTS logins per run, $CONCURRENCY in flight, medians of $RUNS runs;" \
    "PostgreSQL pool $POOL per node${PGOPTS[*]:+, ${PGOPTS[*]}}${NODE_CPU:+; each node limited to $NODE_CPU of a core (cgroup)}"
# Medians per row; CPU per 1000 logins (nodes, PostgreSQL, load generator) and the share
# of the machine used (all CPU seconds / wall seconds / cores).
awk -v cores="$(nproc)" '
function median(row, col,   n, i, j, t, v) {
    n = 0
    for (i = 1; i <= NR; i++) if (r[i] == row) v[++n] = f[i, col]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
{ r[NR] = $1; for (c = 2; c <= NF; c++) f[NR, c] = $c; seen[$1] = 1 }
END {
    printf "%-11s %9s %8s %8s %10s %9s %9s %9s %8s\n", "row", "logins/s", "p50_ms", "p99_ms", "accepted", "node_cpu", "pg_cpu", "load_cpu", "machine"
    split("sqlite-1 postgres-1 postgres-2", rows, " ")
    for (k = 1; k <= 3; k++) {
        row = rows[k]; if (!seen[row]) continue
        acc = 0; sent = 0; lost = 0
        for (i = 1; i <= NR; i++) if (r[i] == row) { acc += f[i, 6]; sent += f[i, 5]; lost += f[i, 7] }
        # CPU per 1000 logins, from the sums over the runs.
        na = 0; g = 0; l = 0; w = 0; n = 0
        for (i = 1; i <= NR; i++) if (r[i] == row) { na += f[i, 9] + f[i, 10]; g += f[i, 11]; l += f[i, 12]; w += f[i, 8]; n += f[i, 5] }
        med[row] = median(row, 2)
        printf "%-11s %9.0f %8.3f %8.3f %10s %9.2f %9.2f %9.2f %7.0f%%\n", row, med[row], median(row, 3), median(row, 4), acc "/" sent, 1000 * na / n, 1000 * g / n, 1000 * l / n, 100 * (na + g + l) / w / cores
        if (lost) printf "  %s: %d requests unanswered\n", row, lost
    }
    print ""
    if (med["sqlite-1"] && med["postgres-1"]) printf "one node, PostgreSQL / SQLite: %.2fx (target: SQLite / PostgreSQL <= 2, here %.2f)\n", med["postgres-1"] / med["sqlite-1"], med["sqlite-1"] / med["postgres-1"]
    if (med["postgres-1"] && med["postgres-2"]) printf "two nodes / one node on PostgreSQL: %.2fx (target: >= 1.6)\n", med["postgres-2"] / med["postgres-1"]
    print "node_cpu, pg_cpu, load_cpu: CPU milliseconds (user + system) per login of the node(s), of all PostgreSQL"
    print "processes, of radius-load; machine: their CPU together over the wall time, as a share of all cores"
    print "(the rest went to other processes on the machine: see the load average)"
}' "$WORK/results"
