#!/usr/bin/env bash
# Catalog read benchmark: installs wrk if missing, then runs the bench
# (release build). BENCH_SECONDS / BENCH_RUNS tune duration and repeats.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
"$root/.ci/install-deps" wrk
cd "$root"
exec cargo bench --locked -p meridian-tests --bench catalog
