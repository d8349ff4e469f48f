#!/usr/bin/env bash
# Instructions per request, counted by callgrind: a measure of orgd's own CPU work
# that the host's noise does not move (wall-clock rates on the 2-core bench host
# moved ±20% between runs of one binary; these counts move ~±3%). For comparing two
# builds of one change, not for absolute speed: it counts user-space instructions
# only (no kernel, no cache misses) and runs orgd ~50× slower than native.
#
#   bench/instructions.sh [--orgd BINARY] [--load get|healthz|patch] [--seconds 8] [--log info|warn]
#
# Starts BINARY (default target/release/orgd) under `valgrind --tool=callgrind` on
# a fresh SQLite store, creates one organization, warms up, then counts what the
# whole process executes while wrk drives 4 connections, minus what it executes
# idle for as long. Prints instructions per request; the profile is left in
# target/callgrind-<load>.out (`callgrind_annotate --auto=no` reads it).
set -euo pipefail
cd "$(dirname "$0")/.."

orgd=target/release/orgd
load=get
seconds=8
log=warn
while [ $# -gt 0 ]; do
  case "$1" in
    --orgd) orgd=$2; shift 2 ;;
    --load) load=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in valgrind wrk curl; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq && apt-get install -y -qq valgrind wrk curl >/dev/null
  fi
done

dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
out="$dir/callgrind.out"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

ORGD_DATA_DIR="$dir" ORGD_LISTEN="127.0.0.1:$port" ORGD_LOG="$log" \
  valgrind --tool=callgrind --callgrind-out-file="$out" "$orgd" serve >"$dir/log" 2>&1 &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  curl -sf "$base/healthz" >/dev/null && break
  sleep 0.5
done
key=$(cat "$dir/bootstrap-admin.key")
id=$(curl -sf -X POST "$base/v1/organizations" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' \
  -d '{"name":"Acme","description":"instructions","metadata":{"tier":"t1"}}' |
  sed -E 's/^\{"id":"([^"]+)".*/\1/')

script="$dir/load.lua"
case "$load" in
  get) printf 'wrk.headers["Authorization"] = "Bearer %s"\nwrk.path = "/v1/organizations/%s"\n' "$key" "$id" >"$script" ;;
  healthz) printf 'wrk.path = "/healthz"\n' >"$script" ;;
  patch)
    cat >"$script" <<LUA
wrk.method = "PATCH"
wrk.path = "/v1/organizations/$id"
wrk.headers["Authorization"] = "Bearer $key"
wrk.headers["Content-Type"] = "application/merge-patch+json"
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"description":"instructions ' .. n .. '-' .. math.random(1e9) .. '"}')
end
LUA
    ;;
  *) echo "unknown load $load" >&2; exit 2 ;;
esac

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'; }
# callgrind_control's dumps are numbered files next to $out; the newest is the last.
dump() {
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  ls -t "$out".* | head -1
}

wrk -t1 -c4 -d3s -s "$script" "$base" >/dev/null
callgrind_control -z "$pid" >/dev/null 2>&1
sleep "$seconds"
idle=$(total "$(dump)")
# GETs answered from orgd's copies of organizations: under callgrind orgd runs ~50×
# slower, and a SQLite copy is answered only within 20 ms of a check of the
# database's change counter (src/store/org_copies.rs), so many GETs here read the
# database where at full speed ~99% do not. The share is printed with the count.
hits() { curl -sf "$base/metrics" | awk '/^orgd_org_copies_hits_total / {print $2}'; }
hits_before=$(hits)
callgrind_control -z "$pid" >/dev/null 2>&1
requests=$(wrk -t1 -c4 -d"${seconds}s" -s "$script" "$base" | awk '/requests in/ {print $1}')
profile=$(dump)
busy=$(total "$profile")
hits_after=$(hits)
copies=""
if [ "$load" = get ] && [ -n "$hits_before" ] && [ -n "$hits_after" ]; then
  copies="; $(( (${hits_after%.*} - ${hits_before%.*}) * 100 / requests ))% from the copies"
fi
mkdir -p target
cp "$profile" "target/callgrind-$load.out"
echo "load $load: $requests requests in ${seconds}s under callgrind; $(( (busy - idle) / requests )) instructions per request" \
  "(busy $busy, idle $idle)$copies; profile in target/callgrind-$load.out"
