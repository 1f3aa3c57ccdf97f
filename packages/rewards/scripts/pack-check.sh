#!/usr/bin/env bash
# Builds @nr/rewards, packs it with `npm pack`, installs the tarball into an empty temporary project (this needs
# the npm registry for mathjs), and checks that the package works there on its own:
#   - `import { verify } from "@nr/rewards"` (ESM) gives the right verdicts,
#   - the types resolve (tsc --noEmit on a TypeScript consumer, moduleResolution NodeNext),
#   - createVerifier finds its worker script inside node_modules,
#   - the `nr-verify` bin runs with the documented exit codes.
# Usage: bash packages/rewards/scripts/pack-check.sh   (exit 0 = all good)
set -euo pipefail

pkg="$(cd "$(dirname "$0")/.." && pwd)"
tsc="$pkg/node_modules/.bin/tsc"
work="$(mktemp -d "${TMPDIR:-/tmp}/nr-rewards-pack-XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Build into a staging copy (package.json, README.md, fresh dist/) so the repository's own dist/ is never touched
# (other tests may be using it at the same time).
stage="$work/stage"
mkdir -p "$stage"
cp "$pkg/package.json" "$pkg/README.md" "$stage/"
echo "[pack-check] building $pkg into $stage/dist"
(cd "$pkg" && "$tsc" -p tsconfig.build.json --outDir "$stage/dist")

echo "[pack-check] npm pack"
tarball="$(cd "$stage" && npm pack --silent --pack-destination "$work" 2>/dev/null | tail -n 1)"
echo "[pack-check] $tarball: $(tar -tzf "$work/$tarball" | wc -l) files"
if tar -tzf "$work/$tarball" | grep -q -E '\.test\.(js|ts)$|/src/'; then
  echo "[pack-check] FAIL: tests or sources leaked into the tarball" >&2
  exit 1
fi

mkdir -p "$work/consumer"
cd "$work/consumer"
cat > package.json <<'JSON'
{ "name": "nr-rewards-consumer", "version": "1.0.0", "private": true, "type": "module" }
JSON
echo "[pack-check] npm install ./$tarball (from the registry: mathjs)"
npm install --no-audit --no-fund --loglevel=error "$work/$tarball" >/dev/null

cat > check.mjs <<'JS'
import assert from "node:assert/strict";
import { verify, createVerifier, mathReward, extractBoxed } from "@nr/rewards";
assert.equal(verify("The answer is $\\boxed{\\frac{1}{2}}$.", "0.5").correct, true);
assert.equal(verify("\\boxed{3}", "6").correct, false);
assert.equal(extractBoxed("\\boxed{\\sqrt{2}}"), "\\sqrt{2}");
assert.equal(mathReward("<think>ok</think> \\boxed{4}", "4", { formatBonus: 0.1 }).reward, 1.1);
const v = createVerifier({ workers: 1, timeoutMs: 5000 });
const r = await v.verify("\\boxed{x^2+2x+1}", "(x+1)^2");
await v.close();
assert.equal(r.correct, true);
console.log("[pack-check] runtime OK:", JSON.stringify(r));
JS
node check.mjs

cat > check.ts <<'TS'
import { verify, type VerifyResult, type VerifyOptions, createVerifier, type Verifier } from "@nr/rewards";
const options: VerifyOptions = { floatPrecision: 4, mode: "math" };
const r: VerifyResult = verify("\\boxed{1}", "1", options);
const ok: boolean = r.correct;
const pool: Verifier = createVerifier({ workers: 1 });
void pool.close();
// @ts-expect-error: reason is a string
const n: number = r.reason;
export { ok, n };
TS
cat > tsconfig.json <<'JSON'
{ "compilerOptions": { "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true, "noEmit": true, "skipLibCheck": false, "types": [] }, "files": ["check.ts"] }
JSON
"$tsc" -p tsconfig.json
echo "[pack-check] types OK"

set +e
./node_modules/.bin/nr-verify '\boxed{2}' '2' >/dev/null; c0=$?
./node_modules/.bin/nr-verify '\boxed{2}' '3' >/dev/null; c1=$?
./node_modules/.bin/nr-verify >/dev/null 2>&1; c2=$?
set -e
if [ "$c0$c1$c2" != "012" ]; then
  echo "[pack-check] FAIL: nr-verify exit codes $c0 $c1 $c2 (want 0 1 2)" >&2
  exit 1
fi
echo "[pack-check] bin OK (exit codes 0 1 2)"
echo "[pack-check] PASS"
