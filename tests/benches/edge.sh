#!/usr/bin/env bash
# Edge cache benchmark: the Meridian edge beside nginx proxy_cache and
# Varnish, in front of the same origin, measured in ONE run on this machine.
#
# Method (copied from the shared peers/README.md so figures compare):
# - origin: nginx serving a ~2 KiB product JSON (edge/product.json) with
#   `Cache-Control: public, max-age=60` on 127.0.0.1:18080; any /p/<x>
#   returns the same document (distinct cache keys for miss tests);
# - caches, each on its own loopback port in front of it: nginx proxy_cache
#   :18081 (cache on /dev/shm), Varnish :18082 (malloc storage), the Meridian
#   edge :18083 (one thread; admin on :18093);
# - every server process is started directly (not via systemd) and pinned to
#   CPU 0 with `taskset -c 0`; the load generator runs on CPU 1:
#   `taskset -c 1 wrk -t1 -c64 -dSECONDSs --latency URL`, after a 3 s warm-up;
# - scenarios: `hit` (GET /product.json, all hits after the warm-up; the
#   origin's static file is measured too, as the practical ceiling) and
#   `miss` (every request a distinct /p/<prefix>-<n> URL, via
#   edge/distinct.lua, with a prefix unique per run and target);
# - BENCH_RUNS runs per target, interleaved (run 1 of every target, then
#   run 2, ...); the run with the median req/s is reported with its p50/p99;
# - then the edge's memory: a fresh edge, RSS (VmRSS) after warming one URL,
#   then after 100,000 distinct URLs have been fetched through it and stored.
#
# The goals are reported (MET / NOT MET), not asserted: the script exits 0
# whatever the figures. Servers are stopped by pid on exit, Ctrl-C or error.
#
# Usage: tests/benches/edge.sh     (BENCH_SECONDS=10, BENCH_RUNS=3 by default;
#        BENCH_EDGE_ACCESS_LOG=off|json|text, default off)
# Installs nginx, varnish, wrk (apt; as root or with sudo) if missing and
# builds the `meridian` binary with BENCH_PROFILE (default `release-lto`:
# release plus fat LTO, ~10 min the first time on 2 cores; `release` is
# about 5-10 % slower on the hit path).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
# A browser's headers, sent by wrk and curl to every target alike (the
# edge's bot scorer would otherwise challenge scripts that send no user
# agent or language).
profile="${BENCH_PROFILE:-release-lto}"
browser=(
  -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
  -H "Accept: application/json,text/html;q=0.9"
  -H "Accept-Language: en-GB,en;q=0.8"
  -H "Accept-Encoding: gzip, br"
)
here="$root/tests/benches/edge"
# The peers' configurations: the project's shared folder beside the
# checkout (`../shared/peers` from the project root), or $BENCH_PEERS.
peers="${BENCH_PEERS:-$root/../shared/peers}"
if [ ! -d "$peers" ]; then
  echo "no peer configurations at $peers (set BENCH_PEERS to the shared peers/ folder)" >&2
  exit 1
fi
peers="$(cd "$peers" && pwd)"
seconds="${BENCH_SECONDS:-10}"
runs="${BENCH_RUNS:-3}"
mem_objects=100000
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

origin_port=18080
nginx_port=18081
varnish_port=18082
edge_port=18083
varnish_mgmt_port=18092 # varnish.sh says -T :18083, which is the edge's port
edge_admin_port=18093
edge_token="bench-admin-token-000000"

work=""        # the run's temp dir (logs, configs), kept for inspection
cache_dir=""   # nginx proxy_cache dir on /dev/shm, removed on exit
declare -A pid_of=() # server name -> pid
started=()           # server names, in start order
warnings=()
fg_pid=""            # the load generator running now, if any

log() { printf '==> %s\n' "$*"; }
warn() {
  printf 'WARNING: %s\n' "$*" >&2
  warnings+=("$*")
}
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- cleanup --

stop_server() {
  local name="$1" pid="${pid_of[$1]:-}"
  [ -n "$pid" ] || return 0
  unset "pid_of[$name]"
  kill -0 "$pid" 2>/dev/null || {
    wait "$pid" 2>/dev/null || true
    return 0
  }
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    printf '%s (pid %s) ignored SIGTERM for 10 s; killing it\n' "$name" "$pid" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

describe_log() {
  case "$1" in
    origin.log | nginx.log | varnish.log) echo "(stdout/stderr)" ;;
    origin-error.log) echo "(origin nginx error log)" ;;
    nginx-error.log) echo "(nginx proxy_cache, start-up errors)" ;;
    edge-error.log) echo "(nginx proxy_cache error log; the name comes from nginx-cache.conf)" ;;
    edge.log) echo "(Meridian edge, benchmark)" ;;
    edge-mem.log) echo "(Meridian edge, memory test)" ;;
  esac
}

cleanup() {
  local status=$? i
  trap - EXIT INT TERM
  [ -n "$fg_pid" ] && kill -TERM "$fg_pid" 2>/dev/null
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    stop_server "${started[$i]}"
  done
  [ -n "$cache_dir" ] && rm -rf "$cache_dir"
  if [ -n "$work" ]; then
    printf '\nlogs and configs (wrk output in wrk-*.txt): %s\n' "$work"
    local file
    for file in "$work"/*.log; do
      [ -f "$file" ] || continue
      printf '  %-60s %s\n' "$file" "$(describe_log "$(basename "$file")")"
    done
  fi
  exit "$status"
}

# ------------------------------------------------------------------ tools --

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The nginx and varnish packages may start their system services on
# install; stop and disable them so they hold no ports or CPU.
stop_package_services() {
  local svc pidfile pid
  for svc in nginx varnish varnishncsa; do
    if command -v systemctl >/dev/null 2>&1; then
      as_root systemctl disable "$svc" >/dev/null 2>&1 || true
      as_root systemctl stop "$svc" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
      as_root service "$svc" stop >/dev/null 2>&1 || true
    fi
  done
  # Without an init system, a package's init script may still have started
  # its daemon: stop it by the pid in its pid file.
  for pidfile in /run/nginx.pid /run/varnishd.pid /run/varnishncsa/varnishncsa.pid; do
    [ -s "$pidfile" ] || continue
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    case "$(cat "/proc/$pid/comm" 2>/dev/null || true)" in
      nginx | varnishd | varnishncsa)
        log "stopping the package's $(cat "/proc/$pid/comm") (pid $pid)"
        as_root kill -TERM "$pid" 2>/dev/null || true
        ;;
    esac
  done
}

install_tools() {
  "$root/.ci/install-deps"
  local missing=()
  command -v nginx >/dev/null 2>&1 || missing+=(nginx)
  command -v varnishd >/dev/null 2>&1 || missing+=(varnish)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}"
    stop_package_services
  fi
}

print_machine() {
  log "machine"
  printf '  nproc:    %s\n' "$(nproc)"
  printf '  load:     %s\n' "$(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; the method wants an idle machine)"
  printf '  nginx:    %s\n' "$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  printf '  varnishd: %s\n' "$(varnishd -V 2>&1 | head -n1)"
  printf '  wrk:      %s\n' "$( (wrk -v 2>&1 || true) | head -n1)"
  printf '  runs:     %s x %s s per target, interleaved; median by req/s\n' "$runs" "$seconds"
}

build_edge() {
  log "building the edge: cargo build --profile $profile -p meridian-cli --bin meridian"
  (cd "$root" && cargo build --profile "$profile" -p meridian-cli --bin meridian)
  edge_bin="${CARGO_TARGET_DIR:-$root/target}/$profile/meridian"
  [ -x "$edge_bin" ] || die "$edge_bin was not built"
}

# ------------------------------------------------------------------ setup --

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_ports_free() {
  local port
  for port in $origin_port $nginx_port $varnish_port $edge_port $varnish_mgmt_port $edge_admin_port; do
    if port_in_use "$port"; then
      die "127.0.0.1:$port is already in use (another benchmark running?)"
    fi
  done
}

prepare_workdir() {
  work="$(mktemp -d -t meridian-edge-bench.XXXXXX)"
  # nginx workers and Varnish's child drop privileges: let them traverse.
  chmod 755 "$work"
  cache_dir="$(mktemp -d /dev/shm/meridian-edge-bench-nginx.XXXXXX)"
  mkdir -p "$work/docroot" "$work/tmp"
  install -m 644 "$here/product.json" "$work/docroot/product.json"
  product_bytes="$(stat -c %s "$work/docroot/product.json")"

  sed -e "s|@DOCROOT@|$work/docroot|g" -e "s|@DIR@|$work|g" \
    "$peers/origin-nginx.conf" >"$work/origin-nginx.conf"
  sed -e "s|@DIR@|$work|g" -e "s|@CACHE@|$cache_dir|g" \
    "$peers/nginx-cache.conf" >"$work/nginx-cache.conf"
  # The peers' Varnish command line, with its management port (-T) moved
  # off :18083, where the edge listens.
  sed -e "s|-T 127.0.0.1:$edge_port|-T 127.0.0.1:$varnish_mgmt_port|" \
    "$peers/varnish.sh" >"$work/varnish.sh"
  if grep -q ":$edge_port" "$work/varnish.sh"; then
    die "$peers/varnish.sh uses :$edge_port, which the edge needs"
  fi

  local geo_db="$root/.meridian/geo/geo-whois-asn-country.mmdb"
  local geo_database_line=""
  if [ -s "$geo_db" ]; then
    geo_database_line="database = \"$geo_db\""
  else
    warn "no GeoIP database at $geo_db (.ci/install-deps fetches it); geo uses the header only"
  fi
  cat >"$work/edge.toml" <<EOF
region = "bench"
listen = "127.0.0.1:$edge_port"
admin_listen = "127.0.0.1:$edge_admin_port"
admin_tokens = [{ name = "bench", token = "$edge_token" }]
threads = 1
grace_period_seconds = 0

[[upstreams]]
name = "bench"
origins = ["127.0.0.1:$origin_port"]
latency_ms = 0

[cache]
max_bytes = 1073741824

[health]
path = "/product.json"

# Everything a production edge does on every request is on: geo lookup
# (trusted proxy ranges, X-Forwarded-For, the country database), bot
# scoring (with velocity tracking on every path) and per-IP rate limiting.
# The limits are set high enough that the load generator is never refused.
[geo]
trusted_header = "cf-ipcountry"
trusted_ranges = ["127.0.0.0/8"]
$geo_database_line

[limits.browse]
per_ip = { per_second = 100000000, burst = 100000000 }

[bots]
challenge_secret = "bench-challenge-secret-0123456789abcdef"
hot_routes = ["/"]
hot_route_per_second = 100000000
EOF
}

# Starts a server in the background; its pid (taskset and varnish.sh exec
# into the server) is recorded for cleanup.
start_server() {
  local name="$1"
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pid_of[$name]=$!
  started+=("$name")
}

# wait_for URL [STATUS]: until URL answers STATUS (200), at most 30 s.
wait_for() {
  local url="$1" want="${2:-200}" i code
  for i in $(seq 1 300); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)"
    [ "$code" = "$want" ] && return 0
    sleep 0.1
  done
  die "$url did not answer $want within 30 s (last: ${code:-none}); see $work/*.log"
}

start_edge() {
  local name="$1" logging=(MERIDIAN_LOG=info,meridian::access=off)
  # No access log by default, like the peers (`access_log off`): the cache
  # path is compared like for like. BENCH_EDGE_ACCESS_LOG=json (or text)
  # measures the edge with its access log, as the chart runs it.
  case "${BENCH_EDGE_ACCESS_LOG:-off}" in
    off) ;;
    json | text)
      logging=(MERIDIAN_LOG=info "MERIDIAN_EDGE__TELEMETRY__LOG_FORMAT=$BENCH_EDGE_ACCESS_LOG") ;;
    *) die "BENCH_EDGE_ACCESS_LOG is off, json or text" ;;
  esac
  start_server "$name" env "${logging[@]}" \
    taskset -c 0 "$edge_bin" edge --config "$work/edge.toml"
  wait_for "http://127.0.0.1:$edge_admin_port/readyz"
}

start_servers() {
  log "starting servers (CPU 0); logs in $work"
  start_server origin taskset -c 0 nginx -p "$work/" -e "$work/origin-error.log" \
    -c "$work/origin-nginx.conf" -g 'daemon off;'
  wait_for "http://127.0.0.1:$origin_port/product.json"
  start_server nginx taskset -c 0 nginx -p "$work/" -e "$work/nginx-error.log" \
    -c "$work/nginx-cache.conf" -g 'daemon off;'
  wait_for "http://127.0.0.1:$nginx_port/product.json"
  start_server varnish sh "$work/varnish.sh" "$work/varnish-work"
  wait_for "http://127.0.0.1:$varnish_port/product.json"
  start_edge edge
}

url_of() {
  case "$1" in
    origin) echo "http://127.0.0.1:$origin_port" ;;
    nginx) echo "http://127.0.0.1:$nginx_port" ;;
    varnish) echo "http://127.0.0.1:$varnish_port" ;;
    edge) echo "http://127.0.0.1:$edge_port" ;;
  esac
}

# ------------------------------------------------------------ verification --

# cache_status TARGET URL: HIT, MISS or ?, from the target's own header.
cache_status() {
  local target="$1" url="$2" headers
  headers="$(curl -s "${browser[@]}" -D - -o /dev/null --max-time 5 "$url" | tr -d '\r' | tr 'A-Z' 'a-z')"
  case "$target" in
    nginx) sed -n 's/^x-cache-status: *//p' <<<"$headers" | tr 'a-z' 'A-Z' ;;
    edge) sed -n 's/^x-cache: *//p' <<<"$headers" | tr 'a-z' 'A-Z' ;;
    varnish)
      # X-Varnish carries two transaction ids on a hit, one on a miss.
      local ids
      ids="$(sed -n 's/^x-varnish: *//p' <<<"$headers" | wc -w)"
      case "$ids" in 2) echo HIT ;; 1) echo MISS ;; *) echo "?" ;; esac
      ;;
    origin) echo "-" ;;
  esac
}

verify_hit() {
  local target="$1" url status size
  url="$(url_of "$target")/product.json"
  size="$(curl -s "${browser[@]}" -o /dev/null -w '%{size_download}' --max-time 5 "$url")"
  [ "$size" = "$product_bytes" ] ||
    warn "$target: /product.json has $size bytes, the origin's has $product_bytes"
  [ "$target" = origin ] && return 0
  status="$(cache_status "$target" "$url")"
  printf '  %-8s /product.json after warm-up: %s\n' "$target" "${status:-no header}"
  [ "$status" = HIT ] || warn "$target: /product.json is not a cache hit after the warm-up (${status:-no header})"
}

# One fresh /p/ URL: a MISS the first time, a HIT the second (it is stored).
verify_miss() {
  local target="$1" url first second
  url="$(url_of "$target")/p/verify-$target-$$"
  first="$(cache_status "$target" "$url")"
  sleep 0.2
  second="$(cache_status "$target" "$url")"
  printf '  %-8s fresh /p/ URL: %s, then %s\n' "$target" "${first:-no header}" "${second:-no header}"
  [ "$first" = MISS ] || warn "$target: a fresh /p/ URL was not a MISS (${first:-no header})"
  [ "$second" = HIT ] || warn "$target: a fetched /p/ URL was not stored (second request: ${second:-no header})"
}

# ------------------------------------------------------------------- load --

# run_fg OUT ERR COMMAND...: runs COMMAND with stdout to OUT and stderr to
# ERR and waits for it. In the background, so that Ctrl-C runs the INT trap
# at once (wrk catches SIGINT and exits 0, which would otherwise let the
# script carry on); the redirections stay on the command, not on the trap.
run_fg() {
  local out="$1" err="$2"
  shift 2
  if [ "$out" = "$err" ]; then
    "$@" >"$out" 2>&1 &
  else
    "$@" >"$out" 2>"$err" &
  fi
  fg_pid=$!
  local status=0
  wait "$fg_pid" || status=$?
  fg_pid=""
  return "$status"
}

# Stops the benchmark if a server has exited (its figures would be junk).
check_servers_alive() {
  local name
  for name in "${!pid_of[@]}"; do
    kill -0 "${pid_of[$name]}" 2>/dev/null ||
      die "$name (pid ${pid_of[$name]}) has exited; see $work/$name.log"
  done
}

# wrk_run OUT URL SECONDS [LUA PREFIX]: one wrk run, output kept in OUT.
wrk_run() {
  local out="$1" url="$2" secs="$3" lua="${4:-}" prefix="${5:-}"
  local cmd=(taskset -c 1 wrk -t1 -c64 "-d${secs}s" --latency "${browser[@]}")
  [ -n "$lua" ] && cmd+=(-s "$lua")
  cmd+=("$url")
  [ -n "$prefix" ] && cmd+=(-- "$prefix")
  check_servers_alive
  run_fg "$out" "$out" "${cmd[@]}" || warn "wrk failed ($out)"
}

# parse_wrk FILE: "req/s p50_ms p99_ms"; nothing if wrk printed no figures.
parse_wrk() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000
      if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000
      if (v ~ /s$/) return v * 1000
      return "nan"
    }
    $1 == "Requests/sec:" { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { if (rps != "" && p50 != "" && p99 != "") printf "%s %s %s\n", rps, p50, p99 }' "$1"
}

# check_wrk FILE LABEL: warn about non-2xx answers and socket errors.
check_wrk() {
  local line
  line="$(grep -E 'Non-2xx|Socket errors' "$1" || true)"
  [ -z "$line" ] || warn "$2: $(tr '\n' ';' <<<"$line")"
}

# bench SCENARIO TARGET...: warm-up, then BENCH_RUNS interleaved runs.
bench() {
  local scenario="$1"
  shift
  local targets=("$@") target run url lua="" prefix="" out
  [ "$scenario" = miss ] && lua="$here/distinct.lua"
  log "$scenario: 3 s warm-up per target"
  for target in "${targets[@]}"; do
    url="$(url_of "$target")/product.json"
    [ "$scenario" = miss ] && prefix="warm-$target-$$"
    wrk_run "$work/wrk-$scenario-$target-warmup.txt" "$url" 3 "$lua" "$prefix"
    check_wrk "$work/wrk-$scenario-$target-warmup.txt" "$scenario $target warm-up"
    if [ "$scenario" = hit ]; then verify_hit "$target"; else verify_miss "$target"; fi
  done
  for run in $(seq 1 "$runs"); do
    for target in "${targets[@]}"; do
      url="$(url_of "$target")/product.json"
      [ "$scenario" = miss ] && prefix="miss-$target-r$run-$$"
      out="$work/wrk-$scenario-$target-$run.txt"
      wrk_run "$out" "$url" "$seconds" "$lua" "$prefix"
      check_wrk "$out" "$scenario $target run $run"
      read -r rps p50 p99 < <(parse_wrk "$out") || true
      if [ -z "${p99:-}" ]; then
        warn "$scenario $target run $run: no figures from wrk (see $out)"
        continue
      fi
      printf '%s %s %s %s %s %s\n' "$scenario" "$target" "$run" "$rps" "$p50" "$p99" >>"$work/results.txt"
      printf '  run %s/%s %-8s %10.0f req/s  p50 %6.2f ms  p99 %6.2f ms\n' \
        "$run" "$runs" "$target" "$rps" "$p50" "$p99"
    done
  done
}

# median SCENARIO TARGET: "req/s p50 p99" of the run with the median req/s
# (the upper one of the middle two for an even count, like catalog.rs);
# an empty line when the target has no successful run.
median() {
  local rows n
  rows="$(awk -v s="$1" -v t="$2" '$1 == s && $2 == t { print $4, $5, $6 }' \
    "$work/results.txt" 2>/dev/null | sort -g -k1,1)"
  n="$(grep -c . <<<"$rows" || true)"
  if [ "$n" -eq 0 ]; then echo; else sed -n "$((n / 2 + 1))p" <<<"$rows"; fi
}

# --------------------------------------------------------------- reporting --

print_table() {
  local scenario target rps p50 p99 edge_rps edge_p99 nginx_rps nginx_p99 label
  printf '\n%-9s %-16s %10s %9s %9s  %s\n' scenario target req/s p50 p99 edge/peer
  for scenario in hit miss; do
    read -r edge_rps _ _ < <(median "$scenario" edge) || true
    local targets=(nginx varnish edge)
    [ "$scenario" = hit ] && targets=(origin nginx varnish edge)
    for target in "${targets[@]}"; do
      read -r rps p50 p99 < <(median "$scenario" "$target") || true
      label="$target"
      [ "$target" = origin ] && label="origin (static)"
      awk -v s="$scenario" -v t="$label" -v r="${rps:-}" -v a="${p50:-}" -v b="${p99:-}" \
        -v e="${edge_rps:-}" -v peer="$([[ $target == nginx || $target == varnish ]] && echo 1)" '
        function commas(n,   s) {
          s = sprintf("%.0f", n)
          while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s)
          return s
        }
        BEGIN {
          if (r == "") { printf "%-9s %-16s %10s %9s %9s\n", s, t, "n/a", "n/a", "n/a"; exit }
          x = ""
          if (peer && e != "" && r > 0) x = sprintf("%.2fx", e / r)
          printf "%-9s %-16s %10s %7.2fms %7.2fms  %s\n", s, t, commas(r), a, b, x
        }'
    done
  done
  printf '(origin (static): nginx serving the file itself, the practical ceiling here; not a cache)\n'

  printf '\ngoals (edge vs nginx proxy_cache, same run):\n'
  read -r edge_rps _ edge_p99 < <(median hit edge) || true
  read -r nginx_rps _ nginx_p99 < <(median hit nginx) || true
  awk -v e="${edge_rps:-}" -v n="${nginx_rps:-}" -v ep="${edge_p99:-}" -v np="${nginx_p99:-}" 'BEGIN {
    if (e == "" || n == "" || n <= 0) { print "  hit:  req/s >= 1.4x nginx and p99 <= nginx p99: NOT MEASURED"; exit }
    ok = (e >= 1.4 * n && ep <= np)
    printf "  hit:  req/s >= 1.4x nginx and p99 <= nginx p99: %s (%.2fx, p99 %.2f ms vs %.2f ms)\n",
      (ok ? "MET" : "NOT MET"), e / n, ep, np
  }'
  read -r edge_rps _ _ < <(median miss edge) || true
  read -r nginx_rps _ _ < <(median miss nginx) || true
  awk -v e="${edge_rps:-}" -v n="${nginx_rps:-}" 'BEGIN {
    if (e == "" || n == "" || n <= 0) { print "  miss: req/s >= 1.5x nginx: NOT MEASURED"; exit }
    printf "  miss: req/s >= 1.5x nginx: %s (%.2fx)\n", (e >= 1.5 * n ? "MET" : "NOT MET"), e / n
  }'
}

# The edge's view after the load: cache gauges, evictions, requests by
# cache status and the hit ratio they give (HIT and STALE over look-ups).
print_edge_metrics() {
  local metrics
  metrics="$(curl -s --max-time 5 "http://127.0.0.1:$edge_admin_port/metrics" || true)"
  printf '\nedge metrics after the benchmark:\n'
  awk '
    /^meridian_edge_cache_(objects|bytes|evictions_total)[{ ]/ {
      name = $1; sub(/\{.*/, "", name); printf "  %-40s %s\n", name, $2
    }
    /^meridian_edge_requests_total\{/ {
      match($1, /cache="[^"]*"/); c = substr($1, RSTART + 7, RLENGTH - 8)
      match($1, /status_class="[^"]*"/); s = substr($1, RSTART + 14, RLENGTH - 15)
      n[c " status_class=" s] += $2
      if (c == "HIT" || c == "STALE") hits += $2
      if (c == "HIT" || c == "STALE" || c == "MISS" || c == "EXPIRED") lookups += $2
    }
    END {
      for (k in n) printf "  requests cache=%-28s %d\n", k, n[k]
      if (lookups > 0) printf "  %-40s %.4f\n", "cache hit ratio", hits / lookups
    }
  ' <<<"$metrics"
}

# Counts the edge logs' WARN/ERROR lines and shows the commonest messages
# (ANSI colours and timestamps stripped). Requests that wrk abandons when a
# run ends are logged by the edge as "Downstream ConnectionClosed" errors.
print_edge_log_problems() {
  local name file problems count
  printf '\nedge logs:\n'
  for name in edge edge-mem; do
    file="$work/$name.log"
    [ -f "$file" ] || continue
    problems="$(sed 's/\x1b\[[0-9;]*m//g' "$file" | grep -E '^[^ ]+ +(WARN|ERROR) ' || true)"
    count="$(grep -c . <<<"$problems" || true)"
    printf '  %s: %s lines, %s at WARN or ERROR level\n' "$file" "$(wc -l <"$file")" "$count"
    [ "$count" -gt 0 ] || continue
    cut -d' ' -f2- <<<"$problems" | sed 's/^ *//' | cut -c1-160 | sort | uniq -c | sort -rn |
      head -n 5 | sed 's/^/    /'
  done
}

# ----------------------------------------------------------------- memory --

metric() {
  local text
  text="$(curl -s --max-time 5 "http://127.0.0.1:$edge_admin_port/metrics" || true)"
  awk -v m="$1" '$1 == m || index($1, m "{") == 1 { print $2; exit }' <<<"$text"
}

rss_kib() {
  awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"
}

memory_test() {
  log "memory: a fresh edge, then $mem_objects distinct URLs through it"
  stop_server edge
  start_edge edge-mem
  local pid="${pid_of[edge-mem]}" url rss0 rss1 objects0 objects1 bytes0 bytes1 i
  url="http://127.0.0.1:$edge_port"
  curl -s "${browser[@]}" -o /dev/null "$url/product.json"
  curl -s "${browser[@]}" -o /dev/null "$url/product.json"
  sleep 1
  rss0="$(rss_kib "$pid")"
  objects0="$(metric meridian_edge_cache_objects)"
  bytes0="$(metric meridian_edge_cache_bytes)"

  # Each of /p/mem-1 ... /p/mem-N exactly once (curl URL globbing), 64 in
  # parallel from CPU 1; bodies to /dev/null, one "status x-cache" line per
  # transfer to the responses file.
  local started_at=$SECONDS
  check_servers_alive
  run_fg /dev/null "$work/memory-responses.txt" \
    taskset -c 1 curl -s "${browser[@]}" --no-progress-meter --parallel --parallel-max 64 -o /dev/null \
    -w '%{stderr}%{http_code} %header{x-cache}\n' "$url/p/mem-[1-$mem_objects]" ||
    warn "curl reported errors in the memory test"
  local answers
  answers="$(sort "$work/memory-responses.txt" | uniq -c | awk '{ printf "%s%s x %s %s", sep, $1, $2, $3; sep = ", " }')"
  printf '  %s requests in %s s: %s\n' "$(wc -l <"$work/memory-responses.txt")" "$((SECONDS - started_at))" "$answers"
  [ "$(grep -c '^200 MISS$' "$work/memory-responses.txt")" -eq "$mem_objects" ] ||
    warn "memory test: not every one of the $mem_objects URLs was answered 200 MISS ($answers)"

  for i in $(seq 1 100); do
    objects1="$(metric meridian_edge_cache_objects)"
    [ "${objects1:-0}" -ge $((objects0 + mem_objects)) ] && break
    sleep 0.2
  done
  [ "${objects1:-0}" -ge $((objects0 + mem_objects)) ] ||
    warn "memory test: meridian_edge_cache_objects is $objects1, expected $((objects0 + mem_objects))"
  sleep 1
  rss1="$(rss_kib "$pid")"
  bytes1="$(metric meridian_edge_cache_bytes)"
  printf '  RSS %s KiB -> %s KiB; cache objects %s -> %s; cache bytes %s -> %s\n' \
    "$rss0" "$rss1" "$objects0" "$objects1" "$bytes0" "$bytes1"
  awk -v r0="$rss0" -v r1="$rss1" -v n="$mem_objects" -v b0="$bytes0" -v b1="$bytes1" 'BEGIN {
    d = (r1 - r0) * 1024
    printf "\nedge memory: +%.1f MiB for %dk cached objects (~%.0f bytes/object; cache accounting says %.0f bytes, ~%.0f bytes/object)\n",
      d / 1048576, n / 1000, d / n, b1, (b1 - b0) / n
  }'
}

# ------------------------------------------------------------------- main --

main() {
  trap cleanup EXIT
  trap 'printf "\ninterrupted\n" >&2; exit 130' INT TERM
  install_tools
  print_machine
  build_edge
  check_ports_free
  prepare_workdir
  start_servers
  bench hit origin nginx varnish edge
  bench miss nginx varnish edge
  print_table
  print_edge_metrics
  memory_test
  if [ ${#warnings[@]} -gt 0 ]; then
    printf '\nwarnings:\n'
    printf '  - %s\n' "${warnings[@]}"
  fi
  print_edge_log_problems
}

main "$@"
