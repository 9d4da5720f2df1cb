#!/usr/bin/env bash
# Brings a checkout to a runnable state on Debian 12, idempotently: system packages (only the
# missing ones, so a second run does no apt work), npm dependencies from the lockfile (only when
# the lockfile changed), and the TypeScript build. Run as root on a fresh machine; safe to rerun.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# build tools for better-sqlite3's native addon; openssl for TLS certificates in tests; the
# kernel tools the Linux dataplane drives (wireguard-go where the kernel lacks WireGuard, tinc
# for switch-mode tunnels), socat/ping for the namespace lab, and etcd (server and etcdctl) for
# the etcd store's tests and fleets; chromium (headless) and curl, the real clients the
# real-clients lab drives through every tunnel mode; iperf3 and iptables for the benchmarks (bench/run.sh: traffic
# through the lab, and the per-IP iptables rules ipferry is measured against); traceroute for
# the checks docs/migration.md has an operator run in a lab (old-new, step 4); prometheus (and
# its promtool) scrapes an agent in the metrics tests
APT_PACKAGES=(ca-certificates python3 make g++ openssl procps iproute2 nftables conntrack socat iputils-ping wireguard-tools wireguard-go tinc etcd-server etcd-client iperf3 iptables traceroute chromium curl prometheus)

say() { printf '[setup] %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${missing[*]}; run this script as root (or apt-get install them)" >&2
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a system etcd on localhost:2379 when it installs etcd-server; ipferry's tests
  # start their own on free ports, and a fleet points the agents at its own cluster. Do not
  # leave a database running that nobody asked for (an operator can enable it on purpose).
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
    say "etcd-server installed; its system service is left disabled"
  fi
  # Likewise Debian's prometheus starts scraping localhost on :9090 (its node exporter, when
  # installed, on :9100): the tests run their own on free ports.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    for unit in prometheus.service prometheus-node-exporter.service; do
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
    say "prometheus installed; its system service is left disabled"
  fi
fi

if ! command -v node >/dev/null 2>&1; then
  say "Node.js 20.18+ is required (Debian 12's own nodejs is 18, too old): install Node 20, 22 or 24 first" >&2
  exit 1
fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=18)?0:1)'; then
  say "Node.js $(node -v) is too old: ipferry needs 20.18 or newer (20, 22 and 24 are supported)" >&2
  exit 1
fi

stamp=node_modules/.ipferry-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)-$(node -v)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing npm dependencies (npm ci; better-sqlite3 compiles from source, about 90 s)"
  npm ci --no-audit --no-fund --loglevel=error
  printf '%s' "$want" >"$stamp"
fi

say "building"
node_modules/.bin/tsc -p tsconfig.build.json
chmod +x bin/ipferry
