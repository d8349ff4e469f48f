#!/usr/bin/env bash
# Contract fuzzing: schemathesis generates requests for every operation of the live
# /openapi.json and checks that no answer is a 5xx, and that every status code,
# content type and body matches the document. Used by .ci/run; runnable alone
# after `cargo build` (it uses target/debug/orgd). CI uses a fixed seed so a run is
# repeatable; `SCHEMATHESIS_SEED=$RANDOM bash tests/contract/schemathesis.sh` explores
# further (do that when changing the API).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=4.32.5
VENV=target/schemathesis-venv
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$VERSION"
fi

DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEY=orgd_schemathesis-ci-key-0123456789
ORGD_DATA_DIR="$DATA" ORGD_LISTEN="127.0.0.1:$PORT" ORGD_BOOTSTRAP_KEY="$KEY" ORGD_LOG=warn \
  ./target/debug/orgd serve >"$DATA/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

# Something for the generated requests to find: an org with a known slug and a member.
curl -sf -X POST "http://127.0.0.1:$PORT/v1/organizations" -H "Authorization: Bearer $KEY" \
  -H 'content-type: application/json' -d '{"name": "Contract", "slug": "contract"}' >/dev/null

"$VENV/bin/schemathesis" --config-file tests/contract/schemathesis.toml run "http://127.0.0.1:$PORT/openapi.json" \
  --header "Authorization: Bearer $KEY" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --seed "${SCHEMATHESIS_SEED:-20261123}" \
  --no-color
if grep -qE "panicked|internal error" "$DATA/serve.log"; then
  echo "orgd logged a panic or internal error during the run:" >&2
  grep -E "panicked|internal error" "$DATA/serve.log" >&2
  exit 1
fi
