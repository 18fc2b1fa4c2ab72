#!/usr/bin/env bash
# Time a PAM login through pam_portcullis.so, excluding the human. The module measures
# itself with `debug` (its time in pam_sm_authenticate minus the time spent in the
# conversation, i.e. waiting for the user): that is what it adds to an SSH login, daemon
# round trips and the Engine's work included. For context, the wall time of whole
# pamtester runs with and without the module.
#
#   bench/pam-login.sh [PROFILE]    # PROFILE = release (default) or debug; build first:
#   cargo build --release -p portcullis-server -p pam_portcullis
#
# Needs pamtester, libpam-wrapper, oathtool. Writes only to a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-release}
N=${N:-50}
BIN=target/$PROFILE/portcullis
SO=$PWD/target/$PROFILE/libpam_portcullis.so
[ -x "$BIN" ] && [ -f "$SO" ] || { echo "build first: cargo build --$PROFILE -p portcullis-server -p pam_portcullis" >&2; exit 1; }
WRAP=$(ls /usr/lib/*/libpam_wrapper.so | head -1)
PERMIT=$(ls /lib/*/security/pam_permit.so /usr/lib/*/security/pam_permit.so 2>/dev/null | head -1)
T=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$T"' EXIT
cat > "$T/p.toml" <<TOML
[store]
url = "sqlite://$T/p.db"
[secrets]
key_file = "$T/master.key"
[radius]
listen = ["127.0.0.1:0"]
[pam]
socket = "$T/pam.sock"
TOML
P="$BIN --config $T/p.toml"
SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
$P tenant add acme >/dev/null
for i in $(seq "$N"); do
    printf 'pw\n' | $P user add --tenant acme "u$i" --password-stdin >/dev/null
    printf '%s\n' "$SECRET" | $P factor enroll totp --tenant acme "u$i" --secret-stdin >/dev/null
done
$P serve >"$T/out" 2>"$T/err" &
SERVER=$!
for _ in $(seq 100); do grep -q '^pam: listening' "$T/out" 2>/dev/null && break; sleep 0.05; done
mkdir "$T/pam.d"
echo "auth required $PERMIT" >"$T/pam.d/baseline"
echo "auth required $SO socket=$T/pam.sock tenant=acme first_factor=stack fail_delay=0 debug" >"$T/pam.d/stack"
echo "auth required $SO socket=$T/pam.sock tenant=acme first_factor=portcullis fail_delay=0 debug" >"$T/pam.d/portcullis"

# run SERVICE USER INPUT -> the module's own time in microseconds, from its `debug` log
# line "module time N us (user excluded)" (pam_wrapper prints pam_syslog at level 3).
run() {
    local out
    out=$(printf '%b' "$3" | PAM_WRAPPER_DEBUGLEVEL=3 LD_PRELOAD=$WRAP PAM_WRAPPER=1 \
        PAM_WRAPPER_SERVICE_DIR=$T/pam.d pamtester "$1" "$2" authenticate 2>&1) \
        || { echo "login of $2 via $1 refused: $out" >&2; exit 1; }
    sed -n 's/.*module time \([0-9]*\) us.*/\1/p' <<<"$out"
}
# wall time of a whole pamtester run in microseconds (process start, PAM, module)
wall() {
    local t0 t1
    t0=$(date +%s%N)
    printf '%b' "$3" | LD_PRELOAD=$WRAP PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=$T/pam.d \
        pamtester "$1" "$2" authenticate >/dev/null 2>&1 || { echo "login of $2 via $1 refused" >&2; exit 1; }
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000))
}
stats() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "median %.2f ms, p90 %.2f ms, mean %.2f ms (n=%d)\n", a[int((NR+1)/2)]/1000, a[int(NR*0.9+0.5)]/1000, s/NR/1000, NR}'; }

# Each user logs in once per mode (a TOTP code is single-use per factor); wait for a fresh
# 30 s step between modes so that the code is unused again.
wait_step() { local s; s=$(( 30 - $(date +%s) % 30 )); sleep "$s"; }
echo "profile: $PROFILE, $N logins each; argon2 cost: config defaults"
for i in $(seq "$N"); do wall baseline "u$i" ''; done | stats | sed 's/^/wall, pamtester + pam_permit only:      /'
wait_step
CODE=$(oathtool --totp -b $SECRET)
for i in $(seq "$N"); do wall stack "u$i" "$CODE\n"; done | stats | sed 's/^/wall, pamtester + module (stack):      /'
wait_step
CODE=$(oathtool --totp -b $SECRET)
for i in $(seq "$N"); do run stack "u$i" "$CODE\n"; done | stats | sed 's/^/module time, first_factor=stack:       /'
wait_step
CODE=$(oathtool --totp -b $SECRET)
for i in $(seq "$N"); do run portcullis "u$i" "pw\n$CODE\n"; done | stats | sed 's/^/module time, first_factor=portcullis:  /'
