"""The ironhub wheel against azure-iot-device, side by side in one run against one emulator.

    python3 benches/python/bench_wheel.py [--messages 5000] [--burst 20000] [--clients 10000]
        [--variant NAME=PYTHON ...] [--emulator PATH]

Prints one JSON object per measurement on stdout, `{"name": ..., "value": ..., "unit": ...}`
(the `bench` harness, benches/run, collects them), then ratios against azure-iot-device. Each SDK
(and each `--variant`: another interpreter or venv with another ironhub wheel installed, e.g. the
wheel of main, to compare before/after) runs in a fresh process of its own, so memory figures are
not shared. What is measured, per SDK:
  - `sync_send`: `send_message` one after another from one thread, each returning at its PUBACK
    (msg/s, and p50/p99 latency in µs);
  - `sync_send_cpu_us`, `sync_send_ctx_switches`: CPU time and context switches of the client
    process per sync send (steadier than wall-clock rates on a shared machine);
  - `aio_gather`: the asyncio client, `--burst` sends in windows of `--window` awaited together
    with `asyncio.gather` (msg/s, CPU per message); `aio_burst`: the whole burst awaited at once
    (msg/s, and how many failed: a burst must not fail);
  - `send_messages` (ironhub only): the burst as `send_messages` calls of `--window` (msg/s);
  - `get_twin_p50`: the sync client's `get_twin` round trip (ms);
  - `rss_per_client`: `--clients` sync clients connected in one process, resident memory added per
    client (KiB) and the OS threads added (azure-iot-device starts threads per client: it gets
    `--azure-clients`).

azure-iot-device only connects to port 8883, so the emulator runs on 8883/443 and the run holds the
machine-wide lock of those ports (tests/support/hubctl.py). The machines are shared and noisy: read
the ratios of one run rather than the absolute numbers.
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))
import hubctl  # noqa: E402  (the emulator process and the operator-side helper of the test suites)

AZURE = "azure-iot-device"


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _usage():
    """(CPU seconds, context switches) of this process so far: per-message figures that stay
    meaningful on a loaded machine, where wall-clock rates mostly measure the neighbours."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_nvcsw + r.ru_nivcsw


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def worker(module: str, job: dict) -> dict:
    """Runs in a child process: imports one SDK (`module`) and measures it."""
    import importlib

    sdk = importlib.import_module(module)
    aio = importlib.import_module(module + ".aio")
    ca = job["ca_pem"]
    out = {}

    # sync send, each waiting for its PUBACK
    client = sdk.IoTHubDeviceClient.create_from_connection_string(job["sync_cs"], server_verification_cert=ca)
    client.connect()
    for i in range(200):  # warm-up
        client.send_message(sdk.Message("warm {}".format(i)))
    n = job["messages"]
    lat = []
    cpu0, switches0 = _usage()
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        client.send_message(sdk.Message("sync {}".format(i)))
        lat.append(time.perf_counter() - s)
    out["sync_send"] = n / (time.perf_counter() - t0)
    cpu1, switches1 = _usage()
    out["sync_send_cpu_us"] = (cpu1 - cpu0) / n * 1e6
    out["sync_send_ctx_switches"] = (switches1 - switches0) / n
    out["sync_send_p50_us"] = _percentile(lat, 0.5) * 1e6
    out["sync_send_p99_us"] = _percentile(lat, 0.99) * 1e6

    twin = []
    for _ in range(job["twins"]):
        s = time.perf_counter()
        client.get_twin()
        twin.append(time.perf_counter() - s)
    out["get_twin_p50_ms"] = statistics.median(twin) * 1e3
    client.shutdown()

    burst, window = job["burst"], job["window"]

    # ironhub bounds its queue (1000 messages by default; one send past it is a ClientError) where
    # azure-iot-device does not: raise the bound to the burst for a like-for-like comparison.
    bounds = {"max_queued_messages": burst, "max_queued_bytes": max(4 << 20, burst * 512)}
    client_kw = dict(server_verification_cert=ca, **(bounds if module == "ironhub" else {}))

    async def pipelined():
        c = aio.IoTHubDeviceClient.create_from_connection_string(job["aio_cs"], **client_kw)
        await c.connect()
        await asyncio.gather(*(c.send_message(sdk.Message("warm {}".format(i))) for i in range(200)))
        res = {}
        # Windows of `window` sends awaited together (within every SDK's queue bound).
        cpu0, _ = _usage()
        t = time.perf_counter()
        for k in range(0, burst, window):
            await asyncio.gather(*(c.send_message(sdk.Message("aio {}".format(i))) for i in range(k, k + window)))
        res["aio_gather"] = burst / (time.perf_counter() - t)
        res["aio_gather_cpu_us"] = (_usage()[0] - cpu0) / burst * 1e6
        # The whole burst at once: how many sends fail (a burst must not fail).
        msgs = [sdk.Message("burst {}".format(i)) for i in range(burst)]
        t = time.perf_counter()
        results = await asyncio.gather(*(c.send_message(m) for m in msgs), return_exceptions=True)
        res["aio_burst"] = burst / (time.perf_counter() - t)
        res["aio_burst_failed"] = sum(1 for r in results if isinstance(r, BaseException))
        if hasattr(c, "send_messages"):
            cpu0, _ = _usage()
            t = time.perf_counter()
            for k in range(0, burst, window):
                await c.send_messages([sdk.Message("batch {}".format(i)) for i in range(k, k + window)])
            res["aio_send_messages"] = burst / (time.perf_counter() - t)
            res["aio_send_messages_cpu_us"] = (_usage()[0] - cpu0) / burst * 1e6
        await c.shutdown()
        return res

    out.update(asyncio.run(pipelined()))

    if hasattr(sdk.IoTHubDeviceClient, "send_messages"):
        c = sdk.IoTHubDeviceClient.create_from_connection_string(job["aio_cs"], **client_kw)
        c.connect()
        t = time.perf_counter()
        for k in range(0, burst, window):
            c.send_messages([sdk.Message("sync batch {}".format(i)) for i in range(k, k + window)])
        out["sync_send_messages"] = burst / (time.perf_counter() - t)
        c.shutdown()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = len(job["many_cs"]) * 2 + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    rss0, threads0 = _rss_kib(), _threads()
    clients = []
    for cs in job["many_cs"]:
        c = sdk.IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca)
        c.connect()
        clients.append(c)
    time.sleep(1.0)  # let per-client threads and buffers settle before reading /proc
    out["rss_per_client_kib"] = (_rss_kib() - rss0) / max(1, len(clients))
    out["threads_added"] = _threads() - threads0
    out["clients"] = len(clients)
    for c in clients:
        c.shutdown()
    return out


def run_worker(python: str, module: str, job: dict, timeout_s: float) -> dict:
    proc = subprocess.run(
        [python, __file__, "--worker", module],
        input=json.dumps(job).encode(),
        stdout=subprocess.PIPE,
        timeout=timeout_s,
        check=True,
        cwd="/",  # never import the source tree's `ironhub` package instead of the installed wheel
    )
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


UNITS = {
    "sync_send": "msg/s",
    "sync_send_p50_us": "us",
    "sync_send_p99_us": "us",
    "get_twin_p50_ms": "ms",
    "sync_send_cpu_us": "us",
    "sync_send_ctx_switches": "count",
    "aio_gather": "msg/s",
    "aio_gather_cpu_us": "us",
    "aio_burst": "msg/s",
    "aio_burst_failed": "count",
    "aio_send_messages_cpu_us": "us",
    "aio_send_messages": "msg/s",
    "sync_send_messages": "msg/s",
    "rss_per_client_kib": "KiB",
    "threads_added": "count",
    "clients": "count",
}
HIGHER_IS_BETTER = {"sync_send", "aio_gather", "aio_burst", "aio_send_messages", "sync_send_messages"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5000, help="sync sends")
    ap.add_argument("--burst", type=int, default=20000, help="pipelined sends awaited at once")
    ap.add_argument("--window", type=int, default=1000, help="sends awaited together in the windowed runs")
    ap.add_argument("--twins", type=int, default=300, help="get_twin round trips")
    ap.add_argument("--clients", type=int, default=10000, help="ironhub clients held at once")
    ap.add_argument("--azure-clients", type=int, default=200, help="azure-iot-device clients held at once")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PYTHON",
        help="also measure the ironhub wheel installed for interpreter PYTHON, reported as NAME",
    )
    ap.add_argument("--skip-azure", action="store_true")
    ap.add_argument("--emulator", help="emulator binary (default: the workspace build or $IRONHUB_EMULATOR)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds allowed per SDK")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(sys.stdin.read()))))
        return
    if args.emulator:
        os.environ["IRONHUB_EMULATOR"] = args.emulator

    runs = [] if args.skip_azure else [(AZURE, sys.executable, "azure.iot.device", args.azure_clients)]
    runs.append(("ironhub", sys.executable, "ironhub", args.clients))
    for v in args.variant:
        name, _, python = v.partition("=")
        runs.append((name, python, "ironhub", args.clients))

    results = {}
    with hubctl.privileged_ports(), tempfile.TemporaryDirectory() as state:
        hub = hubctl.start_privileged_hub(Path(state))
        try:
            for name, python, module, clients in runs:
                tag = name.replace("-", "").replace("_", "")
                job = {
                    "ca_pem": hub.ca_pem,
                    "messages": args.messages,
                    "burst": args.burst,
                    "window": args.window,
                    "twins": args.twins,
                    "sync_cs": hub.device_connection_string("wheel-{}-sync".format(tag)),
                    "aio_cs": hub.device_connection_string("wheel-{}-aio".format(tag)),
                    "many_cs": [hub.device_connection_string("wheel-{}-{}".format(tag, i)) for i in range(clients)],
                }
                print("running {} ({} clients)".format(name, clients), file=sys.stderr, flush=True)
                results[name] = run_worker(python, module, job, args.timeout)
        finally:
            hub.stop()

    for name, res in results.items():
        for key, value in res.items():
            print(json.dumps({"name": "python.{}.{}".format(key, name), "value": round(value, 3), "unit": UNITS[key]}))
    if AZURE in results:
        base = results[AZURE]
        for name, res in results.items():
            if name == AZURE:
                continue
            for key in ("sync_send", "sync_send_cpu_us", "aio_gather", "get_twin_p50_ms", "rss_per_client_kib"):
                if key in res and base.get(key):
                    ratio = res[key] / base[key] if key in HIGHER_IS_BETTER else base[key] / res[key]
                    print(json.dumps({"name": "python.{}.{}_vs_azure".format(key, name), "value": round(ratio, 2), "unit": "x"}))


if __name__ == "__main__":
    main()
