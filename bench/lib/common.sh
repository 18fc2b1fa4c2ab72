# Shell helpers shared by the bench scripts (sourced, not run): free loopback ports, a
# private PostgreSQL in a temporary directory, and per-process figures from /proc.
#
# PostgreSQL: initdb + postgres from Debian's `postgresql` (the newest
# /usr/lib/postgresql/*/bin), as the `postgres` user when run as root (PostgreSQL refuses
# root), listening on 127.0.0.1 only, password (scram-sha-256) auth over TCP, its default
# durability settings unless the caller passes more `-c` options.
#
#   pg_start DIR [postgres options...]   sets PG_PID, PG_PORT, PG_BIN, PG_BASE_URL
#   pg_createdb NAME                     prints the database's URL
#   pg_stop                              fast shutdown, waits (call it from the EXIT trap)

# A free port on 127.0.0.1 (tcp or udp).
free_port() {
    python3 -c 'import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "${1:-tcp}"
}

PG_PID=
PG_PORT=
PG_BIN=
PG_BASE_URL=
PG_PASSWORD=benchpw

pg_start() {
    local dir=$1
    shift
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || {
        echo "PostgreSQL is not installed (apt-get install postgresql)" >&2
        return 1
    }
    local as=()
    [ "$(id -u)" = 0 ] && as=(setpriv --reuid=postgres --regid=postgres --clear-groups --)
    mkdir -p "$dir"
    chmod 755 "$dir"
    # The postgres user must reach DIR: its parent (often from mktemp, mode 0700) gets the
    # search bit only; nothing in it becomes listable or readable by others.
    chmod go+x "$(dirname "$dir")"
    echo "$PG_PASSWORD" >"$dir/pw"
    [ ${#as[@]} -gt 0 ] && chown -R postgres:postgres "$dir"
    "${as[@]}" "$PG_BIN/initdb" -D "$dir/data" -U portcullis --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$dir/pw" -E UTF8 >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    PG_PORT=$(free_port tcp)
    # exec: PG_PID is the postmaster itself (setpriv execs too).
    "${as[@]}" "$PG_BIN/postgres" -D "$dir/data" -p "$PG_PORT" -k "$dir" \
        -c listen_addresses=127.0.0.1 "$@" >"$dir/log" 2>&1 &
    PG_PID=$!
    local _
    for _ in $(seq 100); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
        sleep 0.1
    done
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || {
        echo "PostgreSQL did not start; its log:" >&2
        cat "$dir/log" >&2
        return 1
    }
    PG_BASE_URL="postgres://portcullis:$PG_PASSWORD@127.0.0.1:$PG_PORT"
}

pg_createdb() {
    PGPASSWORD=$PG_PASSWORD "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U portcullis \
        -d postgres -c "CREATE DATABASE $1" >&2
    echo "$PG_BASE_URL/$1?sslmode=disable"
}

pg_stop() {
    [ -n "$PG_PID" ] || return 0
    kill -INT "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
    PG_PID=
}

# The postmaster and its children (backends, checkpointer, WAL writer, ...).
pg_pids() {
    [ -n "$PG_PID" ] || return 0
    echo "$PG_PID"
    ps -o pid= --ppid "$PG_PID" 2>/dev/null | tr -d ' '
}

# Resident memory of a process in kB (0 when it is gone).
rss_kb() { proc_field "/proc/$1/status" '/^VmRSS:/ { print $2 }'; }
# Proportional set size in kB: shared pages (PostgreSQL's shared buffers) split between
# the processes that map them, so a sum over processes counts them once.
pss_kb() { proc_field "/proc/$1/smaps_rollup" '/^Pss:/ { print $2 }'; }
# Open file descriptors of a process.
fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
# CPU time (user + system, all threads) of a process in clock ticks.
cpu_ticks() { proc_field "/proc/$1/stat" '{ sub(/^.*\) /, ""); print $12 + $13 }'; }
# One number from a /proc file, 0 when the process is gone.
proc_field() {
    local v
    v=$(awk "$2" "$1" 2>/dev/null | head -1)
    echo "${v:-0}"
}
# Sums over several pids: sum_of FUNCTION PID...
sum_of() {
    local f=$1 total=0 p
    shift
    for p in "$@"; do total=$((total + $($f "$p"))); done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
# CPU ticks of the whole PostgreSQL server: its live processes, plus what its exited
# children used (the postmaster's cutime + cstime).
pg_cpu_ticks() {
    [ -n "$PG_PID" ] || { echo 0; return; }
    local live reaped
    live=$(sum_of cpu_ticks $(pg_pids))
    reaped=$(proc_field "/proc/$PG_PID/stat" '{ sub(/^.*\) /, ""); print $14 + $15 }')
    echo $((live + reaped))
}
