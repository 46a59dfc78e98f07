#!/usr/bin/env bash
# The quick start: on a fresh Debian machine, installs what is missing, builds, and runs a
# simulated site (a Modbus I/O module from hil-tests) with the edge agent in front of it.
# Prints the API URL and tokens to try; Ctrl-C stops everything. Data stays in demo-data/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh
echo "demo: building (release; the first build takes a few minutes)" >&2
cargo build --release --locked -p gatehouse-edge -p gatehouse-hil-tests \
    --bin gatehouse-edge --bin gatehouse-modbus-sim

bin="$root/target/release"
data="$root/demo-data"
mkdir -p "$data"

# Fresh tokens for this run; the config keeps only their hashes.
make_user() { # name role -> sets token_<name> and hash_<name>
    local out
    out=$("$bin/gatehouse-edge" token --name "$1" --role "$2")
    printf -v "token_$1" '%s' "$(sed -n 's/^token: //p' <<<"$out")"
    printf -v "hash_$1" '%s' "$(sed -n 's/^token_sha256 = "\(.*\)"/\1/p' <<<"$out")"
}
make_user admin admin
make_user guard guard
sed -e "s|^path = .*|path = \"$data/journal.db\"|" \
    -e "s|0000000000000000000000000000000000000000000000000000000000000001|$hash_admin|" \
    -e "s|0000000000000000000000000000000000000000000000000000000000000002|$hash_guard|" \
    edge-agent/examples/site.toml >"$data/site.toml"
"$bin/gatehouse-edge" check-config "$data/site.toml"

pids=()
cleanup() {
    trap - INT TERM EXIT
    [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "demo: stopped; the journal is in $data/journal.db" >&2
}
trap cleanup INT TERM EXIT

"$bin/gatehouse-modbus-sim" --listen 127.0.0.1:5020 --demo 2>"$data/simulator.log" &
pids+=($!)
"$bin/gatehouse-edge" run --config "$data/site.toml" 2>"$data/agent.log" &
pids+=($!)

api=http://127.0.0.1:8080/api/v1
for _ in $(seq 100); do
    curl -fsS "$api/health" >/dev/null 2>&1 && break
    sleep 0.1
done
if ! curl -fsS "$api/health" >/dev/null 2>&1; then
    echo "demo: the agent did not start; its log:" >&2
    cat "$data/agent.log" >&2
    exit 1
fi

cat <<TEXT

  Gatehouse demo site is running.

  API:          $api   (OpenAPI document: $api/openapi.json)
  admin token:  $token_admin
  guard token:  $token_guard

  The simulated lobby door opens every 20 s while the lobby is armed, which raises an incident.
  Try:
    curl -H "Authorization: Bearer $token_guard" $api/points
    curl -H "Authorization: Bearer $token_guard" "$api/incidents?state=open"
    curl -H "Authorization: Bearer $token_guard" -X POST -H 'content-type: application/json' \\
         -d '{"comment":"on my way"}' $api/incidents/1/ack
    curl -H "Authorization: Bearer $token_admin" -X POST -H 'content-type: application/json' \\
         -d '{"point":"lobby.door.unlock","value":true}' $api/devices/lobby-io/commands

  Logs: $data/agent.log, $data/simulator.log.   Ctrl-C stops the demo.

TEXT
wait -n "${pids[@]}"
