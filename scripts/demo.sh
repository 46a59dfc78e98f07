#!/usr/bin/env bash
# The quick start: on a fresh Debian machine, installs what is missing, builds, and runs a
# simulated site (a Modbus I/O module from hil-tests) with the edge agent in front of it, and
# HQ: a Mosquitto broker with mutual TLS and the relay. Claims the appliance, waits for its
# first incident to reach the relay, and prints the URLs and tokens to try. Ctrl-C stops
# everything; data stays in demo-data/ until the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh
echo "demo: building (release; the first build takes a few minutes)" >&2
cargo build --release --locked -p gatehouse-edge -p gatehouse-relay -p gatehouse-hil-tests \
    --bin gatehouse-edge --bin gatehouse-relay --bin gatehouse-modbus-sim --bin gatehouse-test-camera

bin="${CARGO_TARGET_DIR:-$root/target}/release"
data="$root/demo-data"
# The demo's fixed loopback ports: the site API, the relay API, the simulator, the broker,
# the camera.
for port in 8080 8443 5020 18883 18884 8554; do
    if ss -Hltn "sport = :$port" | grep -q .; then
        echo "demo: port $port is already in use (another demo?); stop what listens there:" >&2
        ss -Hltnp "sport = :$port" >&2
        exit 1
    fi
done
# Every run starts a fresh site, relay and broker: new certificates, tokens and claim code.
rm -rf "$data"
mkdir -p "$data"

# --- HQ: certificates, broker, relay -------------------------------------------------------
# The broker runs the shipped relay/deploy/mosquitto.conf with only machine-specific lines
# changed: loopback ports 18883 (appliances) and 18884 (relay), files under demo-data/.
"$bin/gatehouse-relay" pki init --dir "$data/pki" --broker-host localhost >/dev/null
cp relay/deploy/acl-appliances relay/deploy/acl-relay "$data/pki/"
mkdir -p "$data/mosquitto"
{
    # As root, Mosquitto would switch to its own user, which cannot read the keys here.
    [ "$(id -u)" = 0 ] && echo "user root"
    sed -e "s|/etc/mosquitto/gatehouse/|$data/pki/|" \
        -e "s|^listener 8883$|listener 18883 127.0.0.1|" \
        -e "s|^listener 8884$|listener 18884 127.0.0.1|" \
        -e "s|^persistence_location .*|persistence_location $data/mosquitto/|" \
        -e "s|^log_dest file .*|log_dest file $data/mosquitto.log|" \
        relay/deploy/mosquitto.conf
} >"$data/mosquitto.conf"

cat >"$data/relay.toml" <<TOML
[store]
url = "sqlite://$data/relay.db?mode=rwc"

[api]
listen = "127.0.0.1:8443"

[broker]
host = "localhost"
port = 18884
ca_file = "$data/pki/fleet-ca.pem"
cert_file = "$data/pki/relay.pem"
key_file = "$data/pki/relay.key"
client_id = "relay:demo"

[fleet]
ca_cert = "$data/pki/fleet-ca.pem"
ca_key = "$data/pki/fleet-ca.key"
broker_host = "localhost"
broker_port = 18883

[alerts]
offline_after_s = 60
TOML
"$bin/gatehouse-relay" check-config "$data/relay.toml" >/dev/null

relay_cli() { "$bin/gatehouse-relay" "$@" 2>/dev/null; }
tenant=$(relay_cli tenant create --config "$data/relay.toml" --name "Demo tenant" | sed -n 's/^tenant: //p')
site=$(relay_cli site create --config "$data/relay.toml" --tenant "$tenant" --name "Demo HQ" |
    sed -n 's/^site: //p')
claim=$(relay_cli claim create --config "$data/relay.toml" --tenant "$tenant" --site "$site" \
    --name "demo appliance" --valid-for 1h)
appliance=$(sed -n 's/^appliance: //p' <<<"$claim")
code=$(sed -n 's/^claim code: //p' <<<"$claim")
token_hq=$(relay_cli token create --config "$data/relay.toml" --tenant "$tenant" --role operator \
    --name hq-desk | sed -n 's/^token: //p')

# --- the site: agent config and tokens -----------------------------------------------------
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
    -e "s|^storage = .*|storage = \"$data/video\"|" \
    -e "s|0000000000000000000000000000000000000000000000000000000000000001|$hash_admin|" \
    -e "s|0000000000000000000000000000000000000000000000000000000000000002|$hash_guard|" \
    edge-agent/examples/site.toml >"$data/site.toml"
"$bin/gatehouse-edge" check-config "$data/site.toml"

pids=()
cleanup() {
    trap - INT TERM EXIT
    [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "demo: stopped; the journal, relay database and logs are in $data/" >&2
}
trap cleanup INT TERM EXIT

wait_healthy() { # name url log pid
    for _ in $(seq 100); do
        kill -0 "$4" 2>/dev/null || break
        curl -fsS "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "demo: the $1 did not start; its log:" >&2
    cat "$3" >&2
    exit 1
}

mosquitto -c "$data/mosquitto.conf" 2>"$data/mosquitto.stderr" &
pids+=($!)
"$bin/gatehouse-relay" run --config "$data/relay.toml" 2>"$data/relay.log" &
pids+=($!)
relay=http://127.0.0.1:8443/api/v1
wait_healthy relay "$relay/health" "$data/relay.log" "${pids[-1]}"

# The installer's step: the appliance makes its key, the relay's fleet CA signs it, and the
# [uplink] section is appended to the site config. (Plain http is accepted to loopback only.)
"$bin/gatehouse-edge" claim --relay http://127.0.0.1:8443 --code "$code" \
    --dir "$data/identity" --config "$data/site.toml" >/dev/null

"$bin/gatehouse-modbus-sim" --listen 127.0.0.1:5020 --demo 2>"$data/simulator.log" &
pids+=($!)
# The lobby camera: an RTSP test picture with the clock on it.
"$bin/gatehouse-test-camera" --port 8554 --until-killed </dev/null >/dev/null 2>"$data/camera.log" &
pids+=($!)
# As the shipped service unit does (edge-agent/deploy/gatehouse-edge.service).
MALLOC_ARENA_MAX=2 "$bin/gatehouse-edge" run --config "$data/site.toml" 2>"$data/agent.log" &
pids+=($!)
api=http://127.0.0.1:8080/api/v1
wait_healthy agent "$api/health" "$data/agent.log" "${pids[-1]}"

echo "demo: waiting for the first incident to reach the relay (the door opens every 20 s; the" \
     "lobby's entry delay holds the alarm 30 s for someone to disarm)" >&2
incident=""
for _ in $(seq 90); do
    incident=$(curl -fsS -H "Authorization: Bearer $token_hq" "$relay/incidents?limit=1" |
        sed -n 's/.*"title":"\([^"]*\)".*/\1/p')
    [ -n "$incident" ] && break
    sleep 1
done
if [ -z "$incident" ]; then
    echo "demo: no incident reached the relay in 90 s; logs in $data/" >&2
    exit 1
fi

cat <<TEXT

  Gatehouse demo is running: a simulated site, its appliance, a broker and the HQ relay.
  The appliance $appliance was claimed and its first incident reached HQ: "$incident".

  Site API:     $api   (OpenAPI document: $api/openapi.json)
  admin token:  $token_admin
  guard token:  $token_guard
  LAN console:  http://127.0.0.1:8080/   (sign in with the guard token; Live plays the camera)

  HQ relay API: $relay
  HQ operator token: $token_hq
    curl -H "Authorization: Bearer $token_hq" $relay/appliances
    curl -H "Authorization: Bearer $token_hq" "$relay/incidents?state=open"
    curl -H "Authorization: Bearer $token_hq" -X POST $relay/incidents/$appliance/1/ack
      (the acknowledgement reaches the appliance: see it in the site's incidents)

  The simulated lobby door opens every 20 s while the lobby is armed: after the 30 s entry
  delay that is an intrusion incident (docs/rules.md explains the rules in site.toml).
  Try:
    curl -H "Authorization: Bearer $token_guard" $api/points
    curl -H "Authorization: Bearer $token_guard" $api/zones
    curl -H "Authorization: Bearer $token_guard" "$api/incidents?state=open"
    curl -H "Authorization: Bearer $token_guard" -X POST -H 'content-type: application/json' \\
         -d '{"comment":"on my way"}' $api/incidents/1/ack
    curl -H "Authorization: Bearer $token_guard" -X PUT -H 'content-type: application/json' \\
         -d '{"mode":"disarmed"}' $api/zones/lobby/mode
    curl -H "Authorization: Bearer $token_admin" -X POST -H 'content-type: application/json' \\
         -d '{"point":"lobby.door.lock","value":false}' $api/devices/lobby-io/commands
    curl -H "Authorization: Bearer $token_guard" $api/cameras       (signed live_url, snapshot_url)
    curl -H "Authorization: Bearer $token_guard" "$api/clips?incident=1"
      (each intrusion's clip: media_url is an MP4 from 5 s before the door opened; the URL
       works without a token for 5 minutes: curl -o clip.mp4 "http://127.0.0.1:8080MEDIA_URL")
    curl -H "Authorization: Bearer $token_guard" "$api/events/export" > recorded.jsonl
    $bin/gatehouse-edge rules test --config $data/site.toml --events recorded.jsonl

  Logs: $data/agent.log, relay.log, mosquitto.log, simulator.log, camera.log.   Ctrl-C stops the demo.

TEXT
wait -n "${pids[@]}"
