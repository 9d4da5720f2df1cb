#!/usr/bin/env bash
# The demo: ipferry's main job on a real kernel. Builds a throwaway lab of network namespaces
# (an outside client, the provider's router, a gateway, two LAN backends and a LAN client),
# starts a real agent whose Linux dataplane acts inside the gateway's namespace, and walks
# floating IPs through their life with the real CLI, probing real packets between the steps:
# allocate → associate → traffic in, out and hairpin → plan → move under load (with the
# measured interruption) → port forwards on the gateway's own address → IPv6 → release.
# Part 2 builds a second lab (a cloud VM, and two home servers behind their own ISP), joins a
# home agent to the VM's agent with a join token, and serves a FIP from the home server through a
# WireGuard tunnel, the client's address intact and the home server's own address untouched;
# then the server moves: a second home server joins, the FIP moves to it under a probe every
# 10 ms (the measured interruption is printed) and keeps answering with the client's address.
# Only documentation and private addresses, only inside the lab: the machine's own network is
# never touched. Exits non-zero if any step fails; always stops the agents and deletes the labs
# and its directory, also on Ctrl-C. Needs root. The steps are in demo/ (not part of the package
# build: it runs from source with tsx, a dev dependency setup installs, on the lab library in
# src/lab/); the agents and the CLI it drives run from the dist/ setup builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec node --import tsx demo/main.ts "$@"
