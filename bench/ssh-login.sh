#!/usr/bin/env bash
# Time that pam_portcullis.so adds to a real SSH login, the human excluded: Debian's sshd on
# 127.0.0.1 (own config, PAM under pam_wrapper) with keyboard-interactive, the ssh client
# driven by expect, which answers each prompt at once. Two sshd: one whose auth stack is
# our module (password + code: two prompts, two daemon round trips), one with pam_permit
# only (no prompt). The difference of the median wall times is what the module adds,
# including the two extra keyboard-interactive round trips over SSH and the daemon's
# argon2id password check. Each login uses a fresh recovery code (a TOTP code is
# single-use within its step).
#
#   cargo build --release -p portcullis-server -p pam_portcullis
#   bench/ssh-login.sh [PROFILE]        # needs root, openssh-server, expect, libpam-wrapper
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-release}
N=${N:-10}
BIN=$PWD/target/$PROFILE/portcullis
SO=$PWD/target/$PROFILE/libpam_portcullis.so
WRAP=$(ls /usr/lib/*/libpam_wrapper.so | head -1)
PERMIT=$(ls /lib/*/security/pam_permit.so /usr/lib/*/security/pam_permit.so 2>/dev/null | head -1)
T=$(mktemp -d /tmp/portcullis-sshbench.XXXXXX)
cleanup() {
    # shellcheck disable=SC2086 # two pids
    kill ${SSHD:-} "${SERVER:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$T"; [ -z "${KEEP:-}" ] || echo "kept $T" >&2
}
trap cleanup EXIT
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
$P tenant add acme >/dev/null
printf 'pw\n' | $P user add --tenant acme root --password-stdin >/dev/null
printf 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n' | $P factor enroll totp --tenant acme root --secret-stdin >/dev/null
mapfile -t CODES < <($P recovery generate --tenant acme root --json | tr -d '[]," ' | grep -E '^[A-Za-z0-9-]{6,}$')
[ "${#CODES[@]}" -ge "$N" ] || { echo "need $N recovery codes, got ${#CODES[@]}" >&2; exit 1; }
$P serve >"$T/out" 2>"$T/err" &
SERVER=$!
for _ in $(seq 100); do grep -q '^pam: listening' "$T/out" 2>/dev/null && break; sleep 0.05; done
mkdir -p "$T/module" "$T/baseline" /run/sshd
printf 'auth required %s socket=%s tenant=acme first_factor=portcullis fail_delay=0\naccount required %s\nsession required %s\n' \
    "$SO" "$T/pam.sock" "$PERMIT" "$PERMIT" >"$T/module/sshd"
printf 'auth required %s\naccount required %s\nsession required %s\n' "$PERMIT" "$PERMIT" "$PERMIT" >"$T/baseline/sshd"
ssh-keygen -q -t ed25519 -N '' -f "$T/hostkey"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PIDS=()
start_sshd() { # NAME -> port on stdout
    local port
    port=$(free_port)
    cat >"$T/$1.conf" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $T/hostkey
PidFile $T/$1.pid
UsePAM yes
KbdInteractiveAuthentication yes
PasswordAuthentication no
PubkeyAuthentication no
AuthenticationMethods keyboard-interactive
PermitRootLogin yes
StrictModes no
PrintMotd no
CFG
    # stderr through a pipe: the preauth child has RLIMIT_FSIZE 0 and dies writing a file.
    LD_PRELOAD=$WRAP PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=$T/$1 \
        /usr/sbin/sshd -D -e -f "$T/$1.conf" >/dev/null 2> >(cat >"$T/$1.log") &
    echo "$!" >"$T/$1.sshd"
    for _ in $(seq 100); do grep -q 'Server listening' "$T/$1.log" 2>/dev/null && break; sleep 0.05; done
    echo "$port"
}
MODULE_PORT=$(start_sshd module)
BASELINE_PORT=$(start_sshd baseline)
SSHD="$(cat "$T/module.sshd") $(cat "$T/baseline.sshd")"
cat >"$T/login.exp" <<'EXP'
set timeout 20
spawn ssh -F /dev/null -p $env(PORT) -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o PreferredAuthentications=keyboard-interactive -o PubkeyAuthentication=no root@127.0.0.1 true
expect {
  "Password:" { send -- "pw\r"; exp_continue }
  "Verification code (app): " { send -- "$env(CODE)\r"; exp_continue }
  eof {}
}
catch wait result
exit [lindex $result 3]
EXP
login() { # PORT CODE -> wall microseconds
    local t0 t1
    t0=$(date +%s%N)
    PORT=$1 CODE=$2 expect "$T/login.exp" >/dev/null || { echo "ssh login on port $1 failed" >&2; exit 1; }
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000))
}
stats() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "median %.2f ms, p90 %.2f ms, mean %.2f ms (n=%d)\n", a[int((NR+1)/2)]/1000, a[int(NR*0.9+0.5)]/1000, s/NR/1000, NR}'; }
for i in $(seq 0 $((N - 1))); do
    login "$BASELINE_PORT" none >>"$T/baseline.wall"
    login "$MODULE_PORT" "${CODES[$i]}" >>"$T/module.wall"
done
echo "profile: $PROFILE; $N logins each, alternating; first_factor=portcullis, argon2id at config defaults"
stats <"$T/baseline.wall" | sed 's/^/ssh login, pam_permit only:           /'
stats <"$T/module.wall" | sed 's/^/ssh login, pam_portcullis (pw+code): /'
