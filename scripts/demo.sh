#!/usr/bin/env bash
# The demo: starts a real agent on the embedded SQLite store in a throwaway directory and walks
# a floating IP through its life with the real CLI: pool → allocate → associate → move → port
# forwards → list → release, plus the IP Floater verbs. The dataplane is the strict fake for now
# (the Linux dataplane comes next), so nothing on this machine's network is touched.
# Exits non-zero if any step fails; always stops the agent and removes its directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

work=$(mktemp -d /tmp/ipferry-demo.XXXXXX)
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

bold=""; plain=""
if [ -t 1 ]; then bold=$(tput bold 2>/dev/null || true); plain=$(tput sgr0 2>/dev/null || true); fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '%s$ ipferry %s%s\n' "$bold" "$*" "$plain"; ./bin/ipferry "$@"; }
expect_fail() {
  printf '%s$ ipferry %s%s   (expected to fail)\n' "$bold" "$*" "$plain"
  if ./bin/ipferry "$@"; then echo "demo: this should have failed" >&2; exit 1; fi
}

port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
export IPFERRY_SERVER="http://127.0.0.1:$port"
export IPFERRY_TOKEN_FILE="$work/api-token"   # the CLI reads the token the agent created

printf 'ipferry demo: a gateway agent on the embedded SQLite store, driven by the real CLI.\n'
printf 'Addresses are documentation ranges; the dataplane is the strict in-memory fake.\n'

step "start an agent for node gw1 on sqlite:$work/ipferry.db (log: $work/agent.log)"
./bin/ipferry agent --node gw1 --dataplane fake --store "sqlite:$work/ipferry.db" --listen "127.0.0.1:$port" \
  --token-file "$work/api-token" --resync-seconds 5 >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 100); do
  node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' \
    "$IPFERRY_SERVER/healthz" && break
  kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log"; exit 1; }
  sleep 0.1
done
run status

step "a pool of public addresses homed on gw1 (documentation ranges), and the gateway's own shared one"
run pool create public --gateway gw1 --cidr 203.0.113.0/28 \
  --range 198.51.100.10-198.51.100.12 --address 192.0.2.50=52:54:00:12:34:56 --shared 192.0.2.2
run pool create v6 --gateway gw1 --cidr 2001:db8:f::/64
expect_fail pool create clash --gateway gw1 --cidr 203.0.113.8/29

step "allocate: any free address, a requested one, and an idempotent retry"
run fip allocate --pool public --address 203.0.113.10 --description web
run fip allocate --pool v6 --client-token demo-1
run fip allocate --pool v6 --client-token demo-1
expect_fail fip allocate --address 010.1.1.1

step "associate 203.0.113.10 1:1 (nat) with backend 10.0.0.11, then move it to 10.0.0.12"
run fip associate 203.0.113.10 --target 10.0.0.11 --mode nat
expect_fail fip associate 203.0.113.10 --target 10.0.0.99
run fip move 203.0.113.10 --target 10.0.0.12

step "port forwards on the gateway's own address: smtp and a range to a home server"
run fip allocate --address 192.0.2.2
run forward add 192.0.2.2 --proto tcp --port 25 --target 10.0.0.20
run forward add 192.0.2.2 --proto udp --port 60000-60010 --target-port 61000 --target 10.0.0.20
expect_fail forward add 192.0.2.2 --proto tcp --port 22 --target 10.0.0.20
run forward list 192.0.2.2

step "IP Floater's verbs"
run getip 10.0.0.30
run arp 52:54:00:12:34:56
run ippool

step "list: the agent has realised every association (ACTIVE at the revision it applied)"
for _ in $(seq 1 50); do
  ./bin/ipferry fip list --json | grep -q '"stale": true' || break
  sleep 0.1
done
run fip list

step "release: refused while associated, then disassociate and release"
expect_fail fip release 203.0.113.10
run fip disassociate 203.0.113.10
run fip release 203.0.113.10
run status

step "done: stopping the agent and removing $work"
