#!/usr/bin/env bash
# Runs the official Azure IoT Node.js SDKs (judges.test.js) and the Event Hubs consumer
# (eventhubs.test.js) against ironhub-emulator on IoT Hub's
# real ports 8883/443, holding the machine-wide port lock that tests/support/hubctl.py uses.
# Installs the pinned packages (package-lock.json) into this folder with `npm ci` when missing.
# The emulator binary: $IRONHUB_EMULATOR, else target/debug/ironhub-emulator of the workspace.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
emulator=${IRONHUB_EMULATOR:-$root/target/debug/ironhub-emulator}

cd "$here"
if [ ! -d node_modules/azure-iothub ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  timeout 300 npm ci --no-audit --no-fund --loglevel=error
fi

exec 9>/tmp/ironhub-privileged-ports.lock
timeout 900 flock 9

state=$(mktemp -d /tmp/ironhub-node-XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$state"
}
trap cleanup EXIT

# The previous holder of the lock may still be releasing the ports: retry the start for a while.
deadline=$((SECONDS + 30))
while :; do
  RUST_LOG=${RUST_LOG:-warn} "$emulator" serve --state-dir "$state" --mqtt-port 8883 --https-port 443 &
  pid=$!
  for _ in $(seq 1 300); do
    [ -f "$state/hub.json" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -f "$state/hub.json" ] && break
  wait "$pid" 2>/dev/null || true
  pid=
  if [ $SECONDS -ge $deadline ]; then echo "node judges: the emulator did not start" >&2; exit 1; fi
  sleep 1
done

NODE_EXTRA_CA_CERTS="$state/ca.pem" IRONHUB_HUB_JSON="$state/hub.json" \
  timeout 300 node --test --test-concurrency=1 --test-timeout=60000 judges.test.js eventhubs.test.js
