#!/usr/bin/env bash
# Write-side benchmark (checkout, hot-SKU reservations, flash-sale claims)
# on durable PostgreSQL: installs wrk if missing, builds the meridian
# binary (the payment simulators run as its `psp` subcommand) and runs the
# bench (release). BENCH_SECONDS / BENCH_CONCURRENCY / BENCH_USERS tune it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
"$root/.ci/install-deps" wrk
cd "$root"
cargo build --release --locked -p meridian-cli --bin meridian
exec cargo bench --locked -p meridian-tests --bench checkout
