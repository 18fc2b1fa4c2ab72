#!/usr/bin/env bash
# Time a PAM login of a fleet's remote host: pam_portcullis.so with url= + token_file=
# (+ ca_file=) asking `portcullis serve` over HTTPS on 127.0.0.1, one TLS connection per
# step. The module measures itself with `debug` (its time minus the conversation), as in
# bench/pam-login.sh; the socket transport is measured alongside for comparison.
#
#   bench/pam-https-login.sh [PROFILE]   # PROFILE = release (default) or debug; build first:
#   cargo build --release -p portcullis-server -p pam_portcullis
#
# Needs pamtester, libpam-wrapper, oathtool, openssl (the CLI, to make a throwaway CA).
# Run as root (the token file must be owned by root). Writes only to a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-release}
N=${N:-50}
BIN=target/$PROFILE/portcullis
SO=$PWD/target/$PROFILE/libpam_portcullis.so
[ -x "$BIN" ] && [ -f "$SO" ] || { echo "build first: cargo build --$PROFILE -p portcullis-server -p pam_portcullis" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root: the module accepts only a token file owned by root" >&2; exit 1; }
WRAP=$(ls /usr/lib/*/libpam_wrapper.so | head -1)
T=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
SERVER=
trap '[ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }; rm -rf "$T"' EXIT

# A throwaway CA and a certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=bench-ca -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$T/key.pem" -out "$T/req.pem" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$T/ext"
openssl x509 -req -in "$T/req.pem" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
    -days 1 -extfile "$T/ext" -out "$T/cert.pem" 2>/dev/null
chmod 600 "$T/key.pem"

cat > "$T/p.toml" <<TOML
[store]
url = "sqlite://$T/p.db"
[secrets]
key_file = "$T/master.key"
[radius]
listen = ["127.0.0.1:0"]
[pam]
socket = "$T/pam.sock"
[http]
listen = "127.0.0.1:0"
tls_cert = "$T/cert.pem"
tls_key = "$T/key.pem"
TOML
P="$BIN --config $T/p.toml"
SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
$P tenant add acme >/dev/null
for i in $(seq "$N"); do
    printf 'pw\n' | $P user add --tenant acme "u$i" --password-stdin >/dev/null
    printf '%s\n' "$SECRET" | $P factor enroll totp --tenant acme "u$i" --secret-stdin >/dev/null
done
$P --json host add --tenant acme bench-host | sed -n 's/.*"token": "\(.*\)".*/\1/p' >"$T/host.token"
chmod 600 "$T/host.token"
$P serve >"$T/out" 2>"$T/err" &
SERVER=$!
for _ in $(seq 100); do grep -q '^pam: listening' "$T/out" 2>/dev/null && break; sleep 0.05; done
PORT=$(sed -n 's/^http: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$T/out")
[ -n "$PORT" ] || { echo "no http line: $(cat "$T/out" "$T/err")" >&2; exit 1; }
mkdir "$T/pam.d"
echo "auth required $SO socket=$T/pam.sock tenant=acme first_factor=stack fail_delay=0 debug" >"$T/pam.d/socket"
echo "auth required $SO url=https://127.0.0.1:$PORT token_file=$T/host.token ca_file=$T/ca.pem tenant=acme first_factor=stack fail_delay=0 debug" >"$T/pam.d/https"

run() {
    local out
    out=$(printf '%b' "$3" | PAM_WRAPPER_DEBUGLEVEL=3 LD_PRELOAD=$WRAP PAM_WRAPPER=1 \
        PAM_WRAPPER_SERVICE_DIR=$T/pam.d pamtester "$1" "$2" authenticate 2>&1) \
        || { echo "login of $2 via $1 refused: $out" >&2; exit 1; }
    sed -n 's/.*module time \([0-9]*\) us.*/\1/p' <<<"$out"
}
stats() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "median %.2f ms, p90 %.2f ms, mean %.2f ms (n=%d)\n", a[int((NR+1)/2)]/1000, a[int(NR*0.9+0.5)]/1000, s/NR/1000, NR}'; }
wait_step() { local s; s=$(( 30 - $(date +%s) % 30 )); sleep "$s"; }
echo "profile: $PROFILE, $N logins each, first_factor=stack (2 steps: start, answer)"
wait_step
CODE=$(oathtool --totp -b $SECRET)
for i in $(seq "$N"); do run socket "u$i" "$CODE\n"; done | stats | sed 's/^/module time, Unix socket: /'
wait_step
CODE=$(oathtool --totp -b $SECRET)
for i in $(seq "$N"); do run https "u$i" "$CODE\n"; done | stats | sed 's/^/module time, HTTPS:       /'
