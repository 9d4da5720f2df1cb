#!/usr/bin/env bash
# Runs every check and test of ipferry and ends with one summary line:
#   "tests: N passed, N failed, N skipped"
# Static checks (types, lint, import cycles, formatting) run first; a failing one fails the run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh || exit 1

failed_checks=()
check() {
  local name=$1; shift
  printf '[check] %s\n' "$name"
  if ! "$@"; then failed_checks+=("$name"); fi
}
check typecheck node_modules/.bin/tsc -p tsconfig.json --noEmit
check lint node_modules/.bin/eslint --max-warnings 0 .
check cycles node_modules/.bin/depcruise --config .dependency-cruiser.mjs src
check format node_modules/.bin/prettier --check --log-level warn .

mapfile -t files < <(find test src -name '*.test.ts' | sort)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
node --import tsx --test --test-reporter=spec "${files[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# Tests work only inside namespaces they create: the machine's own network must be untouched.
if nft list tables 2>/dev/null | grep -q ipferry; then
  echo "the root network namespace has an ipferry nftables table: a test touched the host" >&2
  failed_checks+=("root-namespace")
fi
# ipft-: the tests' labs; ipfl + 6 random characters: lab-cli.test.ts's (an operator's own
# `ipferry lab` labs are ipfl-NAME-… and are left alone).
leftover=$(ip netns list 2>/dev/null | grep -cE '^(ipft-|ipfl[a-z0-9]{6}-)' || true)
if [ "$leftover" -gt 0 ]; then
  echo "$leftover lab namespace(s) left behind (ip netns list)" >&2
  failed_checks+=("namespaces-left")
fi

count() { grep -aE "^ℹ $1 [0-9]+" "$log" | tail -1 | awk '{print $3}'; }
pass=$(count pass); fail=$(count fail); skip=$(count skipped); todo=$(count todo)
pass=${pass:-0}; fail=${fail:-0}; skip=$(( ${skip:-0} + ${todo:-0} ))
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
if [ ${#failed_checks[@]} -gt 0 ]; then
  printf 'failed checks: %s\n' "${failed_checks[*]}"
  fail=$(( fail + ${#failed_checks[@]} ))
fi
printf 'tests: %s passed, %s failed, %s skipped\n' "$pass" "$fail" "$skip"
[ "$fail" -eq 0 ] && [ "$status" -eq 0 ]
