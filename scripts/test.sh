#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: system packages, npm deps, build, lint, vitest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/bootstrap.sh
bash scripts/postgres-access.sh
npx biome check src test bench examples
npx tsc -p tsconfig.json --noEmit
npx vitest run "$@"
