#!/usr/bin/env bash
# The HTTP contract, checked with tools nobody here wrote, against dev mode from its own /openapi.json:
# 1. the document is linted by Redocly CLI (recommended rules; no errors allowed);
# 2. a Python client generated from it by openapi-python-client runs the README's walk-through
#    (tests/contract/walkthrough.py), no hand edits;
# 3. schemathesis fuzzes every operation with every check, stateful phase included, fixed seed
#    (tests/contract/schemathesis.toml says what is configured and why), and reports how many requests it made.
# Tools go into a throwaway directory, as the test command installs its servers.
# Usage: scripts/contract.sh [path/to/socialnet]   (env: CONTRACT_EXAMPLES, CONTRACT_SEED)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:-target/debug/socialnet}")"
examples="${CONTRACT_EXAMPLES:-150}"
seed="${CONTRACT_SEED:-20261203}"
dir="$(mktemp -d /tmp/socialnet-contract.XXXXXX)"
dev_pid=""
cleanup() { [ -n "$dev_pid" ] && kill "$dev_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
say() { printf '\n==> contract: %s\n' "$*"; }

say "installing schemathesis, openapi-python-client (PyPI) and @redocly/cli (npm) into $dir"
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check \
  'schemathesis==4.32.5' 'openapi-python-client==0.29.1' 'ruff==0.17.6'
npm install --silent --no-audit --no-fund --prefix "$dir/npm" '@redocly/cli@2.77.0' >/dev/null
export PATH="$dir/venv/bin:$PATH" REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
say "dev mode on $base"
"$bin" dev --listen "127.0.0.1:$port" --data-dir "$dir/data" >"$dir/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$base/openapi.json" -o "$dir/openapi.json"
# The demo tokens dev mode prints at start, as a newcomer would use them.
eval "$(grep -E '^ +export (ALICE|BOB)=' "$dir/dev.log")"
export ALICE BOB

say "lint: redocly lint (recommended rules)"
"$dir/npm/node_modules/.bin/redocly" lint "$dir/openapi.json" --format stylish 2>&1 | grep -v '[║╔╚]'

say "generated client: openapi-python-client, then the README walk-through through it"
(cd "$dir" && openapi-python-client generate --path openapi.json --output-path client >/dev/null)
PYTHONPATH="$dir/client" python tests/contract/walkthrough.py "$base" "$dir/post_id"

say "fuzzing: schemathesis, all checks, all phases, seed $seed, $examples examples per operation"
export SOCIALNET_CONTRACT_POST_ID
SOCIALNET_CONTRACT_POST_ID="$(cat "$dir/post_id")"
admin="$("$bin" token --sub alice --role admin --ttl 2h --data-dir "$dir/data")"
status=0
# Every check but one. `use_after_free` is excluded by design of the asynchronous write model: DELETE
# /v1/posts/{id} answers 202 once the command is queued, and the post leaves the reads only when the command
# is committed and projected (milliseconds later), so a read right after the 202 can still succeed; a write
# after a delete is accepted and then rejected when decided (`post_deleted`), as GET /v1/commands/{id}
# says. The document states this on deletePost and on the 202's links. The check assumes a synchronous
# delete (it failed once: the comments of a just-deleted post read as 304).
schemathesis --config-file tests/contract/schemathesis.toml run "$base/openapi.json" \
  -H "Authorization: Bearer $admin" --checks all --exclude-checks use_after_free \
  --seed "$seed" --max-examples "$examples" \
  --report har --report-har-path "$dir/run.har" --no-color >"$dir/schemathesis.txt" 2>&1 || status=$?
sed -n '/SUMMARY/,$p' "$dir/schemathesis.txt"
[ "$status" -eq 0 ] || { sed -n '/FAILURES/,/SUMMARY/p' "$dir/schemathesis.txt" | head -200; exit "$status"; }
python3 -c 'import json,sys; print("schemathesis made", len(json.load(open(sys.argv[1]))["log"]["entries"]), "HTTP requests")' "$dir/run.har"
