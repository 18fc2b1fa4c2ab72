#!/usr/bin/env bash
# Login rate of one node, SQLite store vs PostgreSQL store: PAP + TOTP in append mode
# (password and code in User-Password), N users each logging in once (a TOTP code is
# single-use per factor, so every login is a different user with the same secret), sent
# by one `radclient -f` run keeping P requests in flight. Rate = N / wall time.
#
#   bench/store-login.sh [PROFILE]    # PROFILE = release (default) or debug; build first:
#   HASH=cheap bench/store-login.sh   # argon2id at 1 MiB, t=1: the store's share shows
#   cargo build --release -p portcullis-server
#
# The PostgreSQL server is a private one (bench/lib/common.sh: initdb + postgres from
# Debian's `postgresql`, as the `postgres` user when run as root) in a temporary directory
# on a free loopback port, with its default durability settings (fsync on). Needs
# radclient, oathtool. Several nodes and $6$ users: bench/nodes-login.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/common.sh
PROFILE=${1:-release}
N=${N:-400}
P=${P:-32}
HASH=${HASH:-default}
POOL=${POOL:-8}   # store.max_connections of the PostgreSQL node
PGOPTS=${PGOPTS:-}  # e.g. "-c synchronous_commit=off" (the durability of SQLite's WAL + NORMAL)
PASSWORDS=
if [ "$HASH" = cheap ]; then
    PASSWORDS=$'[passwords]\nargon2_memory_kib = 1024\nargon2_iterations = 1\nargon2_parallelism = 1'
fi
BIN=$PWD/target/$PROFILE/portcullis
[ -x "$BIN" ] || { echo "build first: cargo build --$PROFILE -p portcullis-server" >&2; exit 1; }
T=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
SERVER=
cleanup() {
    [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
    pg_stop
    rm -rf "$T"
}
trap cleanup EXIT
# shellcheck disable=SC2086 # PGOPTS is a list of options
pg_start "$T/pg" $PGOPTS
PG_URL=$(pg_createdb bench)
SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP

# bench NAME STORE_URL -> "NAME: N logins in S s = R logins/s"
bench() {
    local name=$1 url=$2 cfg=$T/$1.toml
    cat >"$cfg" <<TOML
[store]
url = "$url"
max_connections = $POOL
[secrets]
key_file = "$T/master.key"
[radius]
listen = ["127.0.0.1:0"]
[[radius.clients]]
name = "bench"
address = "127.0.0.1/32"
secret = "s3cret"
tenant = "acme"
mode = "append"
require_message_authenticator = false
$PASSWORDS
TOML
    local C="$BIN --config $cfg"
    $C tenant add acme >/dev/null
    for i in $(seq "$N"); do
        printf 'pw\n' | $C user add --tenant acme "u$i" --password-stdin >/dev/null
        printf '%s\n' "$SECRET" | $C factor enroll totp --tenant acme "u$i" --secret-stdin >/dev/null
    done
    $C serve >"$T/$name.out" 2>"$T/$name.err" &
    SERVER=$!
    local addr=
    for _ in $(seq 100); do
        addr=$(sed -n 's/^radius: listening on \([0-9.:]*\).*/\1/p' "$T/$name.out" | head -1)
        [ -n "$addr" ] && break
        sleep 0.05
    done
    # A fresh 30 s step, so that the code stays valid for the whole run.
    sleep $(( 30 - $(date +%s) % 30 ))
    local code
    code=$(oathtool --totp -b "$SECRET")
    : >"$T/$name.req"
    for i in $(seq "$N"); do
        printf 'User-Name = "u%s", User-Password = "pw%s"\n\n' "$i" "$code" >>"$T/$name.req"
    done
    local t0 t1 out
    t0=$(date +%s%N)
    out=$(radclient -s -q -p "$P" -r 1 -t 10 -f "$T/$name.req" "$addr" auth s3cret 2>&1 || true)
    t1=$(date +%s%N)
    local accepted
    accepted=$(sed -n 's/.*Packets accepted.*: *\([0-9]*\).*/\1/p; s/.*Accepted *: *\([0-9]*\).*/\1/p' <<<"$out" | head -1)
    awk -v n="$N" -v a="${accepted:-?}" -v ns=$((t1 - t0)) -v name="$name" \
        'BEGIN {s=ns/1e9; printf "%-10s %d logins (%s accepted) in %.2f s = %.0f logins/s\n", name":", n, a, s, n/s}'
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
}

echo "profile: $PROFILE, N=$N logins, $P in flight, append mode (PAP + TOTP), argon2: $HASH, PostgreSQL pool $POOL ${PGOPTS:+($PGOPTS)}"
bench sqlite "sqlite://$T/bench.db"
bench postgres "$PG_URL"
