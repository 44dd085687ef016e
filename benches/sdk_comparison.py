"""ironhub vs azure-iot-device, measured side by side in one run against one emulator.

    python3 benches/sdk_comparison.py [--messages 2000] [--clients 100] [--emulator PATH]

What it measures, for each SDK in its own fresh Python process (so memory figures are not shared):
  - sequential telemetry: `send_message` one after another (each waits for its PUBACK), msgs/s;
  - concurrent telemetry: the asyncio client, all sends awaited at once with `asyncio.gather`, msgs/s;
  - many clients: N sync clients connected in one process: wall time to connect them all, and the
    resident memory and OS threads they added (read from /proc/self).

The official SDK only connects to port 8883, so the emulator runs on 8883/443 (as root), holding the
same lock as the compatibility suites. The machines are shared and noisy: read the ratios between
the two SDKs of one run, not the absolute numbers. Results print as a Markdown table.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))
import hubctl  # noqa: E402  (the emulator process + operator-side helper the Python suites use)

SDKS = {"azure-iot-device": "azure.iot.device", "ironhub": "ironhub"}


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def worker(sdk_module: str, job: dict) -> dict:
    """Runs in a child process: imports one SDK and measures it."""
    import importlib

    sdk = importlib.import_module(sdk_module)
    aio = importlib.import_module(sdk_module + ".aio")
    ca = job["ca_pem"]
    out = {}

    client = sdk.IoTHubDeviceClient.create_from_connection_string(job["seq_cs"], server_verification_cert=ca)
    client.connect()
    n = job["messages"]
    t0 = time.perf_counter()
    for i in range(n):
        client.send_message(sdk.Message("seq {}".format(i)))
    out["sequential_msgs_per_s"] = n / (time.perf_counter() - t0)
    client.shutdown()

    async def concurrent():
        c = aio.IoTHubDeviceClient.create_from_connection_string(job["conc_cs"], server_verification_cert=ca)
        await c.connect()
        t = time.perf_counter()
        await asyncio.gather(*(c.send_message(sdk.Message("conc {}".format(i))) for i in range(n)))
        rate = n / (time.perf_counter() - t)
        await c.shutdown()
        return rate

    out["concurrent_msgs_per_s"] = asyncio.run(concurrent())

    rss0, threads0 = _rss_kib(), _threads()
    t0 = time.perf_counter()
    clients = []
    for cs in job["many_cs"]:
        c = sdk.IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca)
        c.connect()
        clients.append(c)
    out["connect_all_s"] = time.perf_counter() - t0
    time.sleep(1.0)  # let per-client background threads and buffers settle before reading /proc
    out["rss_kib_per_client"] = (_rss_kib() - rss0) / len(clients)
    out["threads_added"] = _threads() - threads0
    out["clients"] = len(clients)
    for c in clients:
        c.shutdown()
    return out


def run_worker(sdk_name: str, job: dict, timeout_s: float) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", SDKS[sdk_name]],
        input=json.dumps(job).encode(),
        stdout=subprocess.PIPE,
        timeout=timeout_s,
        check=True,
    )
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--emulator", help="emulator binary (default: target/debug or $IRONHUB_EMULATOR)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per SDK")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(sys.stdin.read()))))
        return
    if args.emulator:
        hubctl.EMULATOR_BIN = Path(args.emulator)

    with hubctl.privileged_ports(), tempfile.TemporaryDirectory() as state:
        hub = hubctl.start_privileged_hub(Path(state))
        try:
            results = {}
            for sdk_name in SDKS:
                tag = sdk_name.replace("-", "")
                job = {
                    "ca_pem": hub.ca_pem,
                    "messages": args.messages,
                    "seq_cs": hub.device_connection_string("bench-{}-seq".format(tag)),
                    "conc_cs": hub.device_connection_string("bench-{}-conc".format(tag)),
                    "many_cs": [
                        hub.device_connection_string("bench-{}-{}".format(tag, i)) for i in range(args.clients)
                    ],
                }
                results[sdk_name] = run_worker(sdk_name, job, args.timeout)
        finally:
            hub.stop()

    a, b = results["azure-iot-device"], results["ironhub"]
    rows = [
        ("sequential send_message (msgs/s)", "sequential_msgs_per_s", "{:.0f}", True),
        ("concurrent sends, asyncio.gather (msgs/s)", "concurrent_msgs_per_s", "{:.0f}", True),
        ("connect {} clients (s)".format(args.clients), "connect_all_s", "{:.2f}", False),
        ("resident memory per client (KiB)", "rss_kib_per_client", "{:.0f}", False),
        ("OS threads added by {} clients".format(args.clients), "threads_added", "{:d}", False),
    ]
    print("| measure | azure-iot-device 2.14.0 | ironhub | ironhub advantage |")
    print("|---|---|---|---|")
    for label, key, fmt, higher_is_better in rows:
        x, y = a[key], b[key]
        if higher_is_better:
            ratio = y / x if x else float("inf")
        else:
            ratio = x / y if y else float("inf")
        print("| {} | {} | {} | {:.1f}× |".format(label, fmt.format(x), fmt.format(y), ratio))
    print("\n({} messages, {} clients, {})".format(args.messages, args.clients, time.strftime("%Y-%m-%d")))


if __name__ == "__main__":
    main()
