#!/usr/bin/env bash
# Builds the npm package into wasm/js/pkg/: pkg/node (CommonJS, loaded
# synchronously; index.mjs re-exports it for ESM) and pkg/web (an ES module
# for browsers, `--target web`), each with its .wasm shrunk by wasm-opt.
#
# Needs: the wasm32-unknown-unknown target, the wasm-bindgen CLI of exactly
# the wasm-bindgen version in Cargo.lock, and `npm ci` run here (for
# binaryen's wasm-opt). scripts/test installs all three.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

want="$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"/\1/p;}' "$root/Cargo.lock")"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')"
if [ "$have" != "$want" ]; then
  echo "build.sh: wasm-bindgen CLI is ${have:-missing}, Cargo.lock has $want:" >&2
  echo "  cargo install wasm-bindgen-cli --version =$want --locked" >&2
  exit 1
fi

# A profile of its own, defined here rather than in the workspace: size over
# speed for the module, without touching the release profile other crates use.
cargo build -p pobox-wasm --target wasm32-unknown-unknown --locked --profile wasm \
  --config 'profile.wasm.inherits="release"' \
  --config 'profile.wasm.opt-level="z"' \
  --config 'profile.wasm.lto=true' \
  --config 'profile.wasm.codegen-units=1' \
  --config 'profile.wasm.debug=0' \
  --config 'profile.wasm.panic="abort"'
module="$target_dir/wasm32-unknown-unknown/wasm/pobox_wasm.wasm"

rm -rf pkg
wasm-bindgen --target nodejs --out-dir pkg/node "$module"
wasm-bindgen --target web --out-dir pkg/web "$module"
# The pick fast path (src/fast.js) goes into both generated modules: it
# wraps their `Mesh` and `Destination` classes where they are declared.
for glue in pkg/node/pobox_wasm.js pkg/web/pobox_wasm.js; do
  cat src/fast.js >> "$glue"
done
# -Oz; then the code flattened and its control flow rebuilt by binaryen's
# relooper (--flatten --rereloop), which finds smaller structures than
# rustc's for much of it (3.5 KB less); then -Oz until nothing shrinks
# (--converge). The features are those rustc enabled (wasm-opt refuses
# them otherwise). --low-memory-unused lets constant offsets fold into
# loads and stores: rustc lays the stack out first (the low 1 MiB, growing
# down) and the data from 1 MiB up, so nothing lives in the low 1 KiB. The
# producers and target-features sections are for tools, not for running
# the module. Both targets get the same module; optimise it once when it
# is identical.
wasm_opt() {
  node_modules/.bin/wasm-opt -Oz --flatten --rereloop -Oz --converge --low-memory-unused \
    --strip-producers --strip-target-features \
    --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-reference-types --enable-multivalue "$1" -o "$1"
}
if cmp -s pkg/node/pobox_wasm_bg.wasm pkg/web/pobox_wasm_bg.wasm; then
  wasm_opt pkg/node/pobox_wasm_bg.wasm
  cp pkg/node/pobox_wasm_bg.wasm pkg/web/pobox_wasm_bg.wasm
else
  wasm_opt pkg/node/pobox_wasm_bg.wasm
  wasm_opt pkg/web/pobox_wasm_bg.wasm
fi
# The package is CommonJS; the web build is an ES module.
printf '{ "type": "module" }\n' > pkg/web/package.json
size="$(wc -c < pkg/node/pobox_wasm_bg.wasm)"
gzipped="$(gzip -9 -c pkg/node/pobox_wasm_bg.wasm | wc -c)"
echo "pobox_wasm_bg.wasm: $size bytes ($gzipped gzipped)"
