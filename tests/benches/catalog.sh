#!/usr/bin/env bash
# Catalog read benchmark: installs wrk if missing, then runs the bench
# (release build). BENCH_SECONDS / BENCH_RUNS tune duration and repeats.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
"$root/.ci/install-deps"
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk
fi
cd "$root"
exec cargo bench --locked -p meridian-tests --bench catalog
