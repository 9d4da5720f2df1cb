#!/usr/bin/env bash
# The Debian package under a real systemd: a Debian 12 tree (debootstrap, made once and kept)
# boots with systemd as PID 1 in a container of its own network (systemd-nspawn
# --private-network); the .deb is installed there, the agent started by `systemctl`, with the
# unit's whole sandbox (capabilities, ProtectSystem=strict, SystemCallFilter, DeviceAllow, …).
# Inside the container: a client, a LAN server and an agentless far end, each in a network
# namespace of its own, with documentation addresses only. Checked with real packets: a nat FIP
# to the LAN server, a routed FIP through a WireGuard tunnel (wireguard-go started by the
# sandboxed agent) to the far end, a 1 MiB upload through each; then a restart and a stop leave
# the nftables table and the tunnel daemon as they were, and traffic flows while it is stopped.
#
#   bash scripts/systemd-check.sh [PATH.deb]     (root; builds the .deb when none is given)
#
# Not part of the test suite: the first run downloads a Debian tree (~580 MB) from Debian's
# mirror, and a CI machine may not let systemd-nspawn boot. It touches nothing outside the
# container but its own directory (IPFERRY_SYSTEMD_CHECK_DIR, /var/tmp/ipferry-systemd-check).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${IPFERRY_SYSTEMD_CHECK_DIR:-/var/tmp/ipferry-systemd-check}"
base="$work/base"
tree="$work/tree"
mirror="${IPFERRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { printf '%s\n' "$*"; }
fail() {
  say "FAIL: $*"
  exit 1
}
[ "$(id -u)" = 0 ] || fail "run it as root"

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

deb="${1:-}"
if [ -z "$deb" ]; then deb="$(bash "$repo/scripts/package.sh" | tail -n 1)"; fi
[ -f "$deb" ] || fail "no package at $deb"
node="$(command -v node)" || fail "no node on PATH (the package runs on the host's Node.js)"

mkdir -p "$work"
if [ ! -e "$base/.ipferry-base" ]; then
  say "making the Debian 12 tree in $base (once)…"
  rm -rf "$base"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,iproute2,nftables,wireguard-tools,wireguard-go,conntrack,iputils-ping,procps,curl,python3 \
    bookworm "$base" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    fail "debootstrap failed: see $work/debootstrap.log"
  touch "$base/.ipferry-base"
fi

nspawn_pid=""
cleanup() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    # SIGTERM asks the container's systemd for an orderly shutdown.
    kill -TERM "$nspawn_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$nspawn_pid" 2>/dev/null || true
  fi
  rm -rf "$tree"
}
trap cleanup EXIT

rm -rf "$tree"
cp -a "$base" "$tree"
install -m 0755 "$node" "$tree/usr/local/bin/node"
cp "$deb" "$tree/root/ipferry.deb"
chroot "$tree" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/ipferry.deb \
  >"$work/install.log" 2>&1 || fail "apt-get install of the package failed: see $work/install.log"
echo ipferry-check >"$tree/etc/hostname"

cat >"$tree/etc/ipferry/agent.yaml" <<'EOF'
node: gw
store: sqlite:/var/lib/ipferry/ipferry.db
listen: 127.0.0.1:7447
tunnelPort: 51820
endpoint: 198.51.100.1:51820
EOF

# The hosts around the gateway (the container's own namespace): a client on the "internet",
# a LAN server, and home, a far end that runs no agent.
cat >"$tree/root/hosts.sh" <<'EOF'
set -e
host() { # NAME GW-IF HOST-IF GW-ADDR HOST-ADDR
  ip netns add "$1"
  ip link add "$2" type veth peer name "$3" netns "$1"
  ip addr add "$4/24" dev "$2"; ip link set "$2" up
  ip -n "$1" addr add "$5/24" dev "$3"; ip -n "$1" link set "$3" up; ip -n "$1" link set lo up
  ip -n "$1" route add default via "$4"
}
host client gw-up c0 198.51.100.1 198.51.100.9
host lan gw-lan l0 10.0.0.1 10.0.0.11
host home gw-home h0 192.0.2.1 192.0.2.2
EOF
cat >"$tree/root/server.py" <<'EOF'
import http.server
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(f"saw {self.client_address[0]}")
    def do_POST(self):
        got = self.rfile.read(int(self.headers['Content-Length']))
        self.answer(f"got {len(got)} bytes from {self.client_address[0]}")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('0.0.0.0', 80), Handler).serve_forever()
EOF

systemd-nspawn --boot --private-network --register=no --keep-unit --quiet \
  -D "$tree" --machine="ipferry-check-$$" >"$work/console.log" 2>&1 &
nspawn_pid=$!
init=""
for _ in $(seq 1 100); do
  init="$(pgrep -P "$nspawn_pid" -x systemd || true)"
  [ -n "$init" ] && break
  sleep 0.1
done
[ -n "$init" ] || fail "systemd did not start in the container: see $work/console.log"
# Commands inside get the environment a login there would, not this shell's.
inside() {
  nsenter -t "$init" -a env -i HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
state="$(inside systemctl is-system-running --wait || true)"
say "the container's systemd: $state (PID 1 there, pid $init here)"

checked=0
check() { # WHAT EXPECTED-REGEX COMMAND…
  local what="$1" want="$2" got
  shift 2
  got="$("$@" 2>&1 || true)"
  if [[ "$got" =~ $want ]]; then
    checked=$((checked + 1))
    say "ok  $what: $(printf '%s' "$got" | tail -n 1)"
  else
    say "FAIL $what: wanted /$want/, got:"
    printf '%s\n' "$got"
    inside journalctl -u ipferry-agent --no-pager -o cat | tail -n 20
    exit 1
  fi
}
table() { inside nft -s list table inet ipferry | sha256sum | cut -c1-16; }
# The gateway's tunnel daemon (home's, started by wg-quick, runs too).
daemons() { inside pgrep -d, -f 'wireguard-go -f ipfgw' || true; }
get() { inside ip netns exec client curl -sS -m 5 "http://$1/"; }
upload() { inside ip netns exec client curl -sS -m 20 --data-binary @/root/1MiB "http://$1/"; }

inside bash /root/hosts.sh
head -c 1048576 /dev/urandom >"$tree/root/1MiB"
for h in lan home; do inside bash -c "ip netns exec $h setsid python3 /root/server.py </dev/null >/dev/null 2>&1 &"; done
for h in lan home; do
  for _ in $(seq 1 100); do inside ip netns exec "$h" ss -Hltn 'sport = :80' | grep -q . && break; sleep 0.1; done
done

started=$(date +%s%N)
inside systemctl enable --now ipferry-agent >/dev/null 2>&1
for _ in $(seq 1 100); do inside ipferry status >/dev/null 2>&1 && break; sleep 0.1; done
say "the agent answers $(((($(date +%s%N) - started)) / 1000000)) ms after systemctl start"
check "the unit is active under the sandbox" '^active$' inside systemctl is-active ipferry-agent
check "its capabilities" 'CapBnd:[[:space:]]+0000000000003400' \
  inside bash -c 'grep CapBnd /proc/$(systemctl show -p MainPID --value ipferry-agent)/status'
check "its seccomp filter" 'Seccomp:[[:space:]]+2' \
  inside bash -c 'grep "^Seccomp:" /proc/$(systemctl show -p MainPID --value ipferry-agent)/status'

inside ipferry pool create public --gateway gw --cidr 203.0.113.0/28 >/dev/null
inside ipferry fip allocate --address 203.0.113.10 >/dev/null
check "a nat FIP to the LAN server, applied" 'applied on gw in [0-9]+ ms' \
  inside ipferry fip associate 203.0.113.10 --mode nat --target 10.0.0.11
check "client → 203.0.113.10: the LAN server sees the client" '^saw 198\.51\.100\.9$' get 203.0.113.10
check "a 1 MiB upload through it" '^got 1048576 bytes from 198\.51\.100\.9$' upload 203.0.113.10

inside bash -c 'umask 077; wg genkey >/root/home.key'
inside bash -c 'ipferry node add home --unmanaged --public-key "$(wg pubkey </root/home.key)" --address 192.0.2.2 --endpoint 192.0.2.2:51821' >/dev/null
inside ipferry fip allocate --address 203.0.113.11 >/dev/null
# home is not configured yet, so the gateway holds the FIP DOWN: nothing to wait for.
inside ipferry fip associate 203.0.113.11 --mode routed --node home --target 203.0.113.11 --no-wait >/dev/null
inside bash -c 'umask 077; ipferry node render home --os linux --interface wgh --key-file /root/home.key >/root/wgh.conf'
inside ip netns exec home wg-quick up /root/wgh.conf >/dev/null 2>&1
check "the far end's routed FIP goes ACTIVE" 'ACTIVE' \
  inside bash -c 'for i in $(seq 1 150); do ipferry fip show 203.0.113.11 | grep -q "ACTIVE" && break; sleep 0.2; done; ipferry fip show 203.0.113.11 | grep state'
check "the gateway's wireguard-go runs in the agent's control group" 'wireguard-go -f ipfgw' \
  inside bash -c 'systemd-cgls --no-pager -u ipferry-agent.service | grep wireguard-go'
check "client → 203.0.113.11 through the tunnel: home sees the client" '^saw 198\.51\.100\.9$' get 203.0.113.11
check "a 1 MiB upload through the tunnel" '^got 1048576 bytes from 198\.51\.100\.9$' upload 203.0.113.11

before_table="$(table)"
before_daemons="$(daemons)"
inside systemctl restart ipferry-agent
check "after a restart: the same table" "^$before_table\$" table
check "after a restart: the same wireguard-go" "^$before_daemons\$" daemons
inside systemctl stop ipferry-agent
check "stopped" '^inactive$' inside systemctl is-active ipferry-agent
check "stopped: the same table" "^$before_table\$" table
check "stopped: the same wireguard-go" "^$before_daemons\$" daemons
check "stopped: the nat FIP still answers" '^saw 198\.51\.100\.9$' get 203.0.113.10
check "stopped: the tunnel still carries the routed FIP" '^saw 198\.51\.100\.9$' get 203.0.113.11
inside systemctl start ipferry-agent
check "started again: both FIPs ACTIVE" '2' \
  inside bash -c 'for i in $(seq 1 100); do [ "$(ipferry fip list | grep -c ACTIVE)" = 2 ] && break; sleep 0.2; done; ipferry fip list | grep -c ACTIVE'
check "started again: the same table" "^$before_table\$" table
check "no system call refused by the filter, nothing at error level" '^0$' \
  inside bash -c 'journalctl -u ipferry-agent --no-pager -o cat | grep -cE "EPERM|not permitted|\"level\":(50|60)"'
say "all $checked checks passed under systemd $(inside systemctl --version | head -n 1 | cut -d' ' -f2)"
