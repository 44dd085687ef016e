"""The Python side of benches/run: one script, two imports. `--sdk ironhub` or
`--sdk azure.iot.device` picks the package; everything else is the same code, so the two columns
differ only by the SDK. Same command line and output as the C and Rust programs
(benches/c/bench_common.h): one JSON object per measurement, `{"name", "value", "unit"}`.

    BENCH_CS=... BENCH_CA=ca.pem python3 benches/python_send.py --sdk ironhub sync 2000 200

Modes: connect | sync N SIZE | burst N SIZE (asyncio client, every send awaited at once with
asyncio.gather) | window N W SIZE (asyncio, at most W in flight) | twin N | clients FILE |
methods (answers every direct method at once until stdin closes; benches/run times the calls).
"""

import argparse
import asyncio
import importlib
import json
import os
import resource
import sys
import time


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdk", required=True, choices=["ironhub", "azure.iot.device"])
    ap.add_argument("mode")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    sdk = importlib.import_module(a.sdk)
    aio = importlib.import_module(a.sdk + ".aio")
    with open(os.environ["BENCH_CA"]) as f:
        ca = f.read()
    nums = [int(x) for x in a.args] if a.mode != "clients" else []

    def make(cls, cs):
        return cls.create_from_connection_string(cs, server_verification_cert=ca)

    if a.mode == "clients":
        with open(a.args[0]) as f:
            css = [line for line in f.read().splitlines() if line]
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
    if a.mode in ("burst", "window"):
        n, size = nums[0], nums[-1]
        window = n if a.mode == "burst" else nums[1]
        name = "burst_{}".format(n) if a.mode == "burst" else "window_{}".format(window)

        async def pipelined():
            # ironhub bounds its queue (1000 messages by default; one send past it is a ClientError)
            # where azure-iot-device does not: raise the bound to the burst for a like-for-like run.
            bounds = {"max_queued_messages": n, "max_queued_bytes": max(4 << 20, n * (size + 256))}
            kw = dict(server_verification_cert=ca, **(bounds if a.sdk == "ironhub" else {}))
            c = aio.IoTHubDeviceClient.create_from_connection_string(cs, **kw)
            await c.connect()
            body = "x" * size
            gate = asyncio.Semaphore(window)
            failed = 0

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
    c = make(sdk.IoTHubDeviceClient, cs)
    c.connect()
    connect_ms = (time.perf_counter() - t0) * 1e3
    if a.mode == "connect":
        emit("connect", connect_ms, "ms")
    elif a.mode == "sync":
        n, size = nums
        body = "x" * size
        lat = []
        u0, t0 = usage(), time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            c.send_message(sdk.Message(body))
            lat.append((time.perf_counter() - s) * 1e6)
        name = "sync_send_{}B".format(size)
        emit_rate(name, n, t0, u0)
        emit_percentiles(name, lat)
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


if __name__ == "__main__":
    main()
