#!/usr/bin/env bash
# The benchmark in one command: installs what it needs (wrk; pgbench comes with the
# PostgreSQL client), builds orgd and the harness in release mode, and runs every
# measurement, printing the table and appending it to bench/RESULTS.md.
#
#   bench/run.sh [--duration 20] [--reps 3] [--pg-url none] [--note "…"]
#
# `target/release/examples/bench --help` lists every option. Needs PostgreSQL on
# 127.0.0.1:5432 (trust auth, database `test`) unless --pg-url none.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  echo "== installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
if ! command -v pgbench >/dev/null; then
  echo "== installing pgbench"
  apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null
fi

echo "== building (release)"
cargo build --release --locked --bin orgd --example bench --example bench_bare_axum

# Quoted so the command in RESULTS.md can be pasted back as it was run.
BENCH_COMMAND="bench/run.sh"
if [ $# -gt 0 ]; then BENCH_COMMAND+="$(printf " %q" "$@")"; fi
export BENCH_COMMAND
exec target/release/examples/bench "$@"
