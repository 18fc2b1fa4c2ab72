#!/bin/bash
# Instructions per code-only login, per thread of `portcullis serve`, counted by valgrind's
# callgrind: repeatable for the same binary and inputs whatever else the machine does (a
# timed run on this 2-core VM moves by 10-30% between runs), so small changes to the login
# path can be compared one against the other.
#
#   bench/batch-instructions.sh [--logins N] [--users N] [--log LEVEL] [--keep]
#
# Makes users (bench-users), imports them into a fresh SQLite store, starts the release
# build under callgrind with instrumentation off, sends a warm-up of code-only logins
# (radius-load, client mode otp-only), then counts N logins (16 in flight) and prints each
# thread's instructions per login. The thread that runs `engine::batch::run` is the
# login-batch thread, the bound of code-only logins (docs/BENCHMARKS.md). --log sets
# PORTCULLIS_LOG (default warn, as bench/vs-freeradius; info writes a line per decision).
# BIN=DIR uses the binaries in DIR (e.g. another build to compare) instead of building.
# Needs valgrind (callgrind_control). Loopback only; everything is removed at the end.
set -euo pipefail

LOGINS=2000
USERS=4000
LEVEL=warn
KEEP=
while [ $# -gt 0 ]; do
    case $1 in
    --logins) LOGINS=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --log) LEVEL=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
command -v callgrind_control >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[ "$USERS" -gt $((LOGINS + 600)) ] || { echo "--users must exceed --logins + 600 (each user logs in once)" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib/common.sh"
if [ -z "${BIN:-}" ]; then
    # From the workspace: its .cargo/config.toml sets the bundled SQLite's build options.
    (cd "$ROOT" && cargo build --release --quiet -p portcullis-server -p portcullis-bench)
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi

WORK=$(mktemp -d /tmp/portcullis-instr.XXXXXX)
SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    if [ -n "$KEEP" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PORT=$(free_port udp)
SECRET=instr-secret-0123456789
"$BIN/bench-users" --count "$USERS" --rounds 1000 --out "$WORK/users" >/dev/null
cat >"$WORK/portcullis.toml" <<EOF
[store]
url = "sqlite://$WORK/portcullis.db"
[secrets]
key_file = "$WORK/master.key"
[radius]
listen = ["127.0.0.1:$PORT"]
[[radius.clients]]
name = "code-only"
address = "127.0.0.1/32"
secret = "$SECRET"
tenant = "bench"
mode = "otp-only"
EOF
pc() { "$BIN/portcullis" --config "$WORK/portcullis.toml" "$@"; }
pc tenant add bench >/dev/null
pc user import --tenant bench "$WORK/users/portcullis.csv" >/dev/null
head -n 500 "$WORK/users/users.txt" >"$WORK/warm.txt"
tail -n +501 "$WORK/users/users.txt" >"$WORK/count.txt"

PORTCULLIS_LOG=$LEVEL valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
    --callgrind-out-file="$WORK/cg.%p" "$BIN/portcullis" --config "$WORK/portcullis.toml" serve \
    >"$WORK/serve.log" 2>&1 &
SERVER=$!
load() { # users-file count
    "$BIN/radius-load" --server "127.0.0.1:$PORT" --secret "$SECRET" --users "$1" --mode otp-only \
        -n "$2" -c 16 --timeout-ms 20000 --kv
}
for _ in $(seq 1 120); do
    grep -q "radius: listening on" "$WORK/serve.log" && break
    sleep 0.5
done
grep -q "radius: listening on" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; exit 1; }
load "$WORK/warm.txt" 500 | grep -q "accepts=500 " || { echo "warm-up logins were not all accepted" >&2; exit 1; }
callgrind_control -i on "$SERVER" >/dev/null 2>&1
out=$(load "$WORK/count.txt" "$LOGINS")
callgrind_control -d "$SERVER" >/dev/null 2>&1
callgrind_control -i off "$SERVER" >/dev/null 2>&1
echo "$out" | grep -q "accepts=$LOGINS " || { echo "not every counted login was accepted: $out" >&2; exit 1; }

echo "instructions per code-only login (callgrind, $LOGINS logins, 16 in flight, PORTCULLIS_LOG=$LEVEL)"
total=0
for f in "$WORK"/cg."$SERVER".1-*; do
    n=$(awk '/^summary:/ { print $2; exit }' "$f")
    [ "${n:-0}" -gt 0 ] || continue
    name="thread $(awk '/^thread:/ { print $2; exit }' "$f")"
    grep -q "engine::batch::run" "$f" && name="$name (login-batch)"
    printf '  %-26s %9d\n' "$name" $((n / LOGINS))
    total=$((total + n))
done
printf '  %-26s %9d\n' "all threads" $((total / LOGINS))
