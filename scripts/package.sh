#!/usr/bin/env bash
# Builds the Debian package of ipferry and prints its path:
#   bash scripts/package.sh            → build/ipferry_VERSION_ARCH.deb
#   IPFERRY_PACKAGE_DIR=DIR bash …     → DIR/ipferry_VERSION_ARCH.deb
#
# The package holds the compiled code (compiled here from src/, the checkout's dist/ is left
# alone) with its production dependencies, installed by `npm ci --omit=dev` from the lockfile
# (npm's cache first, the registry only for what it lacks). better-sqlite3 is a native addon: it
# is taken from this checkout's node_modules, where `npm ci` built it for this machine's
# Node.js, and checked to load. So the package is for this architecture (its Architecture field, not `all`)
# and for this Node.js major (recorded in /usr/lib/ipferry/node-major; the wrapper
# /usr/bin/ipferry refuses to run the agent on another). docs/operations.md explains.
set -euo pipefail
umask 022

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${IPFERRY_PACKAGE_DIR:-$repo/build}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

version="$(node -p 'require(process.argv[1]).version' "$repo/package.json")"
arch="$(dpkg --print-architecture)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
deb="$out/ipferry_${version}_${arch}.deb"

stage="$(mktemp -d "$out/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
lib="$stage/usr/lib/ipferry"
say() { echo "package.sh: $*" >&2; }

say "compiling $version into the package"
mkdir -p "$lib"
(cd "$repo" && npx tsc -p tsconfig.build.json --outDir "$lib/dist" --sourceMap false)
# Files the code reads beside itself (the web page's): every non-TypeScript file under src/.
(cd "$repo/src" && find . -type f ! -name '*.ts' -print0) |
  while IFS= read -r -d '' asset; do
    install -D -m 0644 "$repo/src/$asset" "$lib/dist/$asset"
  done
cp "$repo/package.json" "$repo/package-lock.json" "$lib/"
echo "$node_major" >"$lib/node-major"

say "installing the production dependencies from the lockfile (npm's cache first)"
# --ignore-scripts: nothing is downloaded or compiled here; the one native addon is copied below.
(cd "$lib" && npm ci --omit=dev --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error >&2)
addon=node_modules/better-sqlite3/build/Release/better_sqlite3.node
mkdir -p "$(dirname "$lib/$addon")"
cp "$repo/$addon" "$lib/$addon"
rm -rf "$lib/node_modules/better-sqlite3/deps" "$lib/node_modules/better-sqlite3/src"
rm -f "$lib/package-lock.json" "$lib/node_modules/.package-lock.json"
node -e 'const D = require(process.argv[1]); new D(":memory:").prepare("select 1").get();' \
  "$lib/node_modules/better-sqlite3" ||
  {
    say "better-sqlite3's addon in node_modules does not load on $(node --version): run npm ci first"
    exit 1
  }

say "the wrapper, the unit, the config example, completions, man page and docs"
install -D -m 0755 "$repo/packaging/ipferry" "$stage/usr/bin/ipferry"
install -D -m 0644 "$repo/packaging/ipferry-agent.service" \
  "$stage/lib/systemd/system/ipferry-agent.service"
install -D -m 0644 "$repo/packaging/agent.yaml" "$stage/etc/ipferry/agent.yaml"
cli=("node" "$lib/dist/cli/bin.js")
install -d "$stage/usr/share/bash-completion/completions" \
  "$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d" \
  "$stage/usr/share/man/man1" "$stage/usr/share/doc/ipferry"
"${cli[@]}" completion bash >"$stage/usr/share/bash-completion/completions/ipferry"
"${cli[@]}" completion zsh >"$stage/usr/share/zsh/vendor-completions/_ipferry"
"${cli[@]}" completion fish >"$stage/usr/share/fish/vendor_completions.d/ipferry.fish"
(cd "$repo" && node --import tsx scripts/man.ts) | gzip -9n >"$stage/usr/share/man/man1/ipferry.1.gz"
for doc in operations.md configuration.md cli.md errors.md; do
  install -m 0644 "$repo/docs/$doc" "$stage/usr/share/doc/ipferry/$doc"
done
printf 'ipferry\nLicense: Apache-2.0 (/usr/share/common-licenses/Apache-2.0)\n' \
  >"$stage/usr/share/doc/ipferry/copyright"

install -d "$stage/DEBIAN"
install -m 0644 "$repo/packaging/conffiles" "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "$repo/packaging/$script" "$stage/DEBIAN/$script"
done
size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
  "$repo/packaging/control.in" >"$stage/DEBIAN/control"

dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
