"""emulator/Dockerfile's runtime, without a container daemon: the image's own ENTRYPOINT + CMD
and HEALTHCHECK command, run the way the image runs them (a non-root user, state in a fresh
directory standing in for the volume, the binary copied out of the build), against the binary
this wheel installed.

Needs root (to switch to the image's user with setpriv), so it is skipped elsewhere. Docker lets
a container's non-root user bind 8883/443 (net.ipv4.ip_unprivileged_port_start=0 in its network
namespace); here that one capability is granted to the process instead, under the machine-wide lock
on those ports. The image binds 0.0.0.0; here it binds loopback only.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import pytest

from ironhub_emulator import find_binary
from ironhub_emulator.ports import sdk_ports_lock

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="switching to the image's user needs root and setpriv",
)


def _runtime_stage() -> Dict[str, str]:
    """The final stage's instructions (the last FROM onwards), continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    out: Dict[str, str] = {}
    for line in lines[last_from:]:
        keyword, _, rest = line.partition(" ")
        out[keyword.upper()] = rest.strip()
    return out


def _exec_form(value: str) -> List[str]:
    form = json.loads(value)
    assert isinstance(form, list) and all(isinstance(a, str) for a in form), value
    return form


@pytest.fixture(scope="module")
def image():
    stage = _runtime_stage()
    user = stage["USER"].split(":")
    uid, gid = int(user[0]), int(user[1] if len(user) > 1 else user[0])
    entrypoint, cmd = _exec_form(stage["ENTRYPOINT"]), _exec_form(stage["CMD"])
    health = stage["HEALTHCHECK"]
    assert " CMD " in " " + health + " ", health
    health_cmd = _exec_form(health.split("CMD", 1)[1].strip())
    volume = _exec_form(stage["VOLUME"])
    return {"uid": uid, "gid": gid, "entrypoint": entrypoint, "cmd": cmd, "health": health_cmd,
            "volume": volume, "expose": stage["EXPOSE"].split()}


def test_the_image_declares_a_non_root_user_a_volume_and_the_hub_ports(image):
    assert image["uid"] != 0 and image["gid"] != 0
    assert {"8883", "443"} <= set(image["expose"])
    assert image["cmd"][0] == "serve"
    state_arg = image["cmd"][image["cmd"].index("--state-dir") + 1]
    assert image["volume"] == [state_arg], "the state directory must be the volume"
    assert image["health"][0] == image["entrypoint"][0] and image["health"][1] == "healthcheck"
    assert image["health"][image["health"].index("--state-dir") + 1] == state_arg


@pytest.fixture
def sandbox(image):
    """A world-readable copy of the binary and an empty state directory owned by the image's user."""
    root = Path(tempfile.mkdtemp(prefix="ironhub-image-"))
    os.chmod(root, 0o755)
    binary = root / "ironhub-emulator"
    shutil.copy2(find_binary(), binary)
    os.chmod(binary, 0o755)
    volume = root / "data"
    volume.mkdir()
    os.chown(volume, image["uid"], image["gid"])
    try:
        yield binary, volume
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _as_image_user(image, argv: List[str], bind_low_ports: bool = False) -> List[str]:
    prefix = ["setpriv", "--reuid={}".format(image["uid"]), "--regid={}".format(image["gid"]), "--clear-groups"]
    if bind_low_ports:
        prefix += ["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]
    return prefix + argv


def _image_argv(image, words: List[str], binary: Path, volume: Path) -> List[str]:
    state_arg = image["cmd"][image["cmd"].index("--state-dir") + 1]
    out = []
    for w in words:
        if w == image["entrypoint"][0]:
            w = str(binary)
        elif w == state_arg:
            w = str(volume)
        elif w == "0.0.0.0":
            w = "127.0.0.1"  # the image binds every interface; this machine's tests stay on loopback
        out.append(w)
    return out


def _healthcheck(image, binary, volume) -> subprocess.CompletedProcess:
    argv = _as_image_user(image, _image_argv(image, image["health"], binary, volume))
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_the_image_command_serves_as_its_user_and_the_healthcheck_tracks_it(image, sandbox):
    binary, volume = sandbox
    before = _healthcheck(image, binary, volume)
    assert before.returncode == 1 and "hub.json" in before.stderr, before

    serve = _image_argv(image, image["entrypoint"] + image["cmd"], binary, volume)
    with sdk_ports_lock():
        log = open(volume.parent / "emulator.log", "wb")
        proc = subprocess.Popen(_as_image_user(image, serve, bind_low_ports=True), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not (volume / "hub.json").exists():
                assert proc.poll() is None, (volume.parent / "emulator.log").read_text()
                assert time.monotonic() < deadline, "no hub.json after 60 s"
                time.sleep(0.1)
            info = json.loads((volume / "hub.json").read_text())
            assert (info["mqttPort"], info["httpsPort"]) == (8883, 443)

            up = _healthcheck(image, binary, volume)
            assert up.returncode == 0 and up.stdout.startswith("healthy:"), up

            # Everything the emulator wrote in the volume belongs to the image's user.
            owners = {(p.name, p.stat().st_uid) for p in volume.iterdir()}
            assert {"hub.json", "ca.pem", "state.db"} <= {name for name, _ in owners}
            assert all(uid == image["uid"] for _, uid in owners), owners

            # The check authenticates: a hub.json with another policy key gets 401 from the live hub.
            forged = volume.parent / "forged"
            forged.mkdir()
            key = info["serviceConnectionString"].rsplit("SharedAccessKey=", 1)[1]
            wrong = "A" * len(key.rstrip("=")) + "=" * (len(key) - len(key.rstrip("=")))
            info["serviceConnectionString"] = info["serviceConnectionString"].replace(key, wrong)
            (forged / "hub.json").write_text(json.dumps(info))
            forged_check = _healthcheck(image, binary, forged)
            assert forged_check.returncode == 1 and "401" in forged_check.stderr, forged_check
            assert key not in forged_check.stderr + forged_check.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
            log.close()
        assert code == 0, (volume.parent / "emulator.log").read_text()

    down = _healthcheck(image, binary, volume)
    assert down.returncode == 1 and down.stdout == "", down
    print("healthcheck after stop:", shlex.quote(down.stderr.strip()))
