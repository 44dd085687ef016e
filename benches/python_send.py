"""The Python benchmark program: one script, two imports. `--sdk ironhub` or `--sdk azure.iot.device`
picks the package; everything else is the same code, so two columns differ only by the SDK. Same
command line and output as the C and Rust programs (benches/c/bench_common.h): one JSON object per
measurement, `{"name", "value", "unit"}`. benches/run drives it one mode at a time:

    BENCH_CS=... BENCH_CA=ca.pem python3 benches/python_send.py --sdk ironhub sync 2000 200

Modes: connect | sync N SIZE | burst N SIZE (asyncio client, every send awaited at once with
asyncio.gather) | window N W SIZE (asyncio, at most W in flight) | batch N W SIZE (ironhub only: the
sync client's `send_messages`, W messages a call) | aio_batch N W SIZE (ironhub only: the asyncio
client's `send_messages`) | twin N | clients FILE | methods (answers every direct method at once
until stdin closes; benches/run times the calls).

It also runs a whole side-by-side comparison by itself, for working on the wheel:

    python3 benches/python_send.py compare [--variant NAME=PYTHON ...] [--rounds 3] [--clients 1000]

starts one emulator on IoT Hub's ports (holding the machine-wide lock of tests/support/hubctl.py;
with --skip-azure, on free ports without the lock),
runs azure-iot-device, the installed ironhub and every `--variant` (another interpreter or venv with
another ironhub wheel, e.g. main's, for before/after figures) round by round in rotating order, each
mode in a fresh process, and prints the medians as JSON lines (`python.<measure>.<side>`) with the
ratios to azure-iot-device and to the first variant.
"""

import argparse
import asyncio
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def emit(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


def emit_percentiles(prefix, samples):
    samples = sorted(samples)
    for p in (50, 90, 99):
        emit("{}_p{}".format(prefix, p), samples[int((len(samples) - 1) * p / 100)], "us")


def usage():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return (ru.ru_utime + ru.ru_stime) * 1e6, ru.ru_nvcsw + ru.ru_nivcsw


def emit_rate(prefix, n, t0, u0):
    secs = time.perf_counter() - t0
    u1 = usage()
    emit(prefix, n / secs, "msg/s")
    emit(prefix + "_cpu", (u1[0] - u0[0]) / n, "us/msg")
    emit(prefix + "_ctxsw", (u1[1] - u0[1]) / n, "switches/msg")


def proc_status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def queue_bounds(sdk, n, size):
    """ironhub bounds its queue (1000 messages by default; a send past it is a ClientError) where
    azure-iot-device does not: raise the bound to the burst for a like-for-like run."""
    if sdk != "ironhub":
        return {}
    return {"max_queued_messages": max(n, 1000), "max_queued_bytes": max(4 << 20, n * (size + 256))}


def measure(a):
    """One mode of one SDK, in this process."""
    sdk = importlib.import_module(a.sdk)
    aio = importlib.import_module(a.sdk + ".aio")
    with open(os.environ["BENCH_CA"]) as f:
        ca = f.read()
    nums = [int(x) for x in a.args] if a.mode != "clients" else []

    if a.sdk == "ironhub" and os.environ.get("BENCH_MQTT_PORT"):
        port = {"mqtt_port": int(os.environ["BENCH_MQTT_PORT"])}  # azure-iot-device knows 8883 only
    else:
        port = {}

    def make(cls, cs, **kw):
        return cls.create_from_connection_string(cs, server_verification_cert=ca, **port, **kw)

    if a.mode == "clients":
        with open(a.args[0]) as f:
            css = [line for line in f.read().splitlines() if line]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 2 * len(css) + 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(2 * len(css) + 256, hard), hard))
        warm = make(sdk.IoTHubDeviceClient, css[0])  # one-off costs (runtime, imports) are not per client
        warm.connect()
        warm.shutdown()
        rss0, threads0 = proc_status("VmRSS:"), proc_status("Threads:")
        t0 = time.perf_counter()
        clients = []
        for cs in css:
            c = make(sdk.IoTHubDeviceClient, cs)
            c.connect()
            clients.append(c)
        secs = time.perf_counter() - t0
        time.sleep(1.0)  # per-client background threads and buffers settle before /proc is read
        n = len(clients)
        emit("clients_{}_connect".format(n), secs, "s")
        emit("clients_{}_rss".format(n), (proc_status("VmRSS:") - rss0) / n, "KiB/client")
        emit("clients_{}_threads".format(n), proc_status("Threads:") - threads0, "threads")
        for c in clients:
            c.shutdown()
        return

    cs = os.environ["BENCH_CS"]
    if a.mode in ("burst", "window", "aio_batch"):
        n, size = nums[0], nums[-1]
        window = n if a.mode == "burst" else nums[1]
        name = {"burst": "burst_{}", "window": "window_{}", "aio_batch": "aio_send_messages_{}"}[a.mode]
        name = name.format(n if a.mode == "burst" else window)

        async def pipelined():
            c = make(aio.IoTHubDeviceClient, cs, **queue_bounds(a.sdk, n, size))
            await c.connect()
            body = "x" * size
            failed = 0
            if a.mode == "aio_batch":
                u0, t0 = usage(), time.perf_counter()
                for k in range(0, n, window):
                    await c.send_messages([sdk.Message(body) for _ in range(min(window, n - k))])
                emit_rate(name, n, t0, u0)
                await c.shutdown()
                return
            gate = asyncio.Semaphore(window)

            async def one():
                nonlocal failed
                async with gate:
                    try:
                        await c.send_message(sdk.Message(body))
                    except Exception:  # noqa: BLE001  (a failed send is what this counts)
                        failed += 1

            u0, t0 = usage(), time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            emit_rate(name, n, t0, u0)
            emit(name + "_failed", failed, "sends")
            await c.shutdown()

        asyncio.run(pipelined())
        return

    t0 = time.perf_counter()
    c = make(sdk.IoTHubDeviceClient, cs, **(queue_bounds(a.sdk, nums[0], nums[-1]) if a.mode == "batch" else {}))
    c.connect()
    connect_ms = (time.perf_counter() - t0) * 1e3
    if a.mode == "connect":
        emit("connect", connect_ms, "ms")
    elif a.mode == "sync":
        n, size = nums
        body = "x" * size
        for _ in range(min(200, n)):  # warm-up: first sends pay for lazily made state
            c.send_message(sdk.Message(body))
        lat = []
        u0, t0 = usage(), time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            c.send_message(sdk.Message(body))
            lat.append((time.perf_counter() - s) * 1e6)
        name = "sync_send_{}B".format(size)
        emit_rate(name, n, t0, u0)
        emit_percentiles(name, lat)
    elif a.mode == "batch":
        n, window, size = nums
        body = "x" * size
        u0, t0 = usage(), time.perf_counter()
        for k in range(0, n, window):
            c.send_messages([sdk.Message(body) for _ in range(min(window, n - k))])
        emit_rate("send_messages_{}".format(window), n, t0, u0)
    elif a.mode == "twin":
        lat = []
        for _ in range(nums[0]):
            s = time.perf_counter()
            c.get_twin()
            lat.append((time.perf_counter() - s) * 1e6)
        emit_percentiles("twin_get", lat)
    elif a.mode == "methods":
        c.on_method_request_received = lambda req: c.send_method_response(
            sdk.MethodResponse.create_from_method_request(req, 200, {"ok": True})
        )
        time.sleep(0.5)  # the subscription is made when the handler is set
        emit("ready", 1, "")
        sys.stdin.read()
    else:
        sys.exit("unknown mode {!r}".format(a.mode))
    c.shutdown()


# -- compare: the whole side-by-side run --------------------------------------------------------

AZURE = "azure-iot-device"


def compare(a):
    if a.emulator:
        os.environ["IRONHUB_EMULATOR"] = a.emulator  # read by hubctl when imported
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "tests" / "support"))
    import hubctl  # the emulator process and the operator-side helper of the test suites

    sides = {} if a.skip_azure else {AZURE: (sys.executable, "azure.iot.device")}
    sides["ironhub"] = (sys.executable, "ironhub")
    for v in a.variant:
        name, _, python = v.partition("=")
        sides[name] = (python, "ironhub")
    s, b, w = a.size, a.burst, a.window
    plan = [["sync", a.messages, s], ["burst", b, s], ["window", b, w, s], ["twin", a.twins]]
    ironhub_only = [["batch", b, b, s], ["aio_batch", b, b, s]]  # the whole burst in one call
    results, units = {}, {}

    def run(side, mode_args, env):
        python, module = sides[side]
        cmd = [python, __file__, "--sdk", module] + [str(x) for x in mode_args]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, timeout=a.timeout, cwd="/", text=True)
        if proc.returncode != 0:
            print("{} {}: exit {}".format(side, mode_args, proc.returncode), file=sys.stderr, flush=True)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                m = json.loads(line)
                results.setdefault(side, {}).setdefault(m["name"], []).append(m["value"])
                units[m["name"]] = m["unit"]

    import contextlib

    # azure-iot-device connects to 8883 only; without it, a hub on free ports needs no lock.
    ports_lock = contextlib.nullcontext() if a.skip_azure else hubctl.privileged_ports()
    with ports_lock, tempfile.TemporaryDirectory() as state:
        if a.skip_azure:
            hub = hubctl.Hub(Path(state), hostname="127.0.0.1")
            os.environ["BENCH_MQTT_PORT"] = str(hub.mqtt_port)
        else:
            hub = hubctl.start_privileged_hub(Path(state), hostname="127.0.0.1")
        ca = Path(state) / "bench-ca.pem"
        ca.write_text(hub.ca_pem)
        try:
            names = list(sides)
            css = {side: hub.device_connection_string("py-{}".format(i)) for i, side in enumerate(names)}
            for r in range(a.rounds):
                for side in names[r % len(names):] + names[:r % len(names)]:
                    env = dict(os.environ, BENCH_CS=css[side], BENCH_CA=str(ca))
                    print("round {} {} (load {:.1f})".format(r + 1, side, os.getloadavg()[0]), file=sys.stderr, flush=True)
                    for mode_args in plan + ([] if side == AZURE else ironhub_only):
                        run(side, mode_args, env)
            for i, side in enumerate(names):
                n = a.azure_clients if side == AZURE else a.clients
                if n <= 0:
                    continue
                listing = Path(state) / "clients-{}.txt".format(i)
                listing.write_text("\n".join(hub.device_connection_string("py-c{}-{}".format(i, k)) for k in range(n)))
                run(side, ["clients", listing], dict(os.environ, BENCH_CA=str(ca)))
        finally:
            hub.stop()

    medians = {side: {k: statistics.median(v) for k, v in res.items()} for side, res in results.items()}
    for side, res in medians.items():
        for key, value in res.items():
            emit("python.{}.{}".format(key, side), round(value, 3), units[key])
    bases = ([AZURE] if AZURE in medians else []) + ([a.variant[0].partition("=")[0]] if a.variant else [])
    for base in bases:
        for side, res in medians.items():
            if side == base:
                continue
            for key, value in res.items():
                old = medians[base].get(key)
                if not old or not value or units[key] not in ("msg/s", "us/msg", "us", "KiB/client"):
                    continue
                ratio = value / old if units[key] == "msg/s" else old / value
                emit("python.{}.{}_vs_{}".format(key, side, base), round(ratio, 2), "x")
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdk", choices=["ironhub", "azure.iot.device"])
    ap.add_argument("mode")
    ap.add_argument("args", nargs="*")
    # compare's options
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PYTHON")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=5000, help="sync sends")
    ap.add_argument("--burst", type=int, default=20000, help="pipelined sends")
    ap.add_argument("--window", type=int, default=1000, help="sends in flight / per send_messages call")
    ap.add_argument("--size", type=int, default=200, help="payload bytes")
    ap.add_argument("--twins", type=int, default=300)
    ap.add_argument("--clients", type=int, default=1000, help="ironhub clients held in one process")
    ap.add_argument("--azure-clients", type=int, default=100, help="azure-iot-device clients (a thread set each)")
    ap.add_argument("--skip-azure", action="store_true")
    ap.add_argument("--emulator", help="emulator binary (default: $IRONHUB_EMULATOR or the debug build)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per mode")
    a = ap.parse_args()
    if a.mode == "compare":
        compare(a)
    elif a.sdk is None:
        ap.error("--sdk is required")
    else:
        measure(a)


if __name__ == "__main__":
    main()
