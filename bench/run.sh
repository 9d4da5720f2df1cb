#!/usr/bin/env bash
# The benchmark command: brings the checkout up to date like the README's commands (Debian
# packages incl. iperf3 and iptables, npm dependencies, the build), then runs every benchmark
# module in bench/modules.ts and writes bench/results.json, docs/benchmarks.md and
# docs/benchmarks.svg. As root, on Debian 12; everything runs in throwaway network namespaces.
#
#   bash bench/run.sh            # the full run (under 15 minutes on 2 cores)
#   bash bench/run.sh --quick    # a smoke run: small sizes, results in bench/out/
#   bash bench/run.sh --only dataplane-apply[,…]   # some modules, results in bench/out/
#   bash bench/run.sh --list     # the modules
set -euo pipefail
started_ms=$(date +%s%3N)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export IPF_BENCH_STARTED_MS=$started_ms
export IPF_BENCH_COMMAND="bash bench/run.sh${*:+ $*}"
exec node --import tsx bench/run.ts "$@"
