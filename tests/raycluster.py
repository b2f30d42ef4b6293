"""A real two-node Ray cluster on this machine, for the tests: a head and one worker node, each
started by ``ray start`` as its own set of processes, on loopback, with token authentication.

Used as a module by the ``ray_cluster`` fixture (``tests/test_ray_cluster.py``), and as a script
by ``.ci/run``, which starts the cluster before the suite and stops it after::

    python tests/raycluster.py start STATE.json   # prints the head's address
    python tests/raycluster.py stop STATE.json

``STATE.json`` records the address, the cluster's authentication token (generated here: Ray 2.60
requires one for a head node with ``RAY_AUTH_MODE=token``, and a fresh machine has none in
``~/.ray``) and the worker node's node-manager port, so a test can find the worker's raylet and
kill it (a node lost mid-scan). The fixture uses the cluster of
``$EDGEPROOF_RAY_STATE`` when it is set, else starts one for the test session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


def _ray_bin() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else (shutil.which("ray") or "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(token: str) -> dict[str, str]:
    """The environment a process needs to join the cluster (token authentication)."""
    return {**os.environ, **ENV, "RAY_AUTH_TOKEN": token}


@dataclass(frozen=True)
class Cluster:
    address: str
    worker_node_manager_port: int
    token: str

    def env(self) -> dict[str, str]:
        """The environment a driver needs to join this cluster."""
        return env(self.token)

    def processes_of_worker(self) -> list[int]:
        """The worker node's raylet and the Ray worker processes it started."""
        raylets = [pid for pid, cmd in _processes() if _is_worker_raylet(cmd, self)]
        out = list(raylets)
        for pid, _cmd in _processes():
            if _parent(pid) in raylets:
                out.append(pid)
        return out

    def busy_worker_tasks(self) -> list[int]:
        """Ray worker processes on the worker node that are running a task right now."""
        raylets = {pid for pid, cmd in _processes() if _is_worker_raylet(cmd, self)}
        return [
            pid
            for pid, cmd in _processes()
            if _parent(pid) in raylets
            and cmd.startswith("ray::")
            and "IDLE" not in cmd
            and "Agent" not in cmd
        ]

    def kill_worker_node(self) -> int:
        """SIGKILL the worker node's raylet and its workers; how many processes were killed."""
        pids = self.processes_of_worker()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)


def _is_worker_raylet(cmd: str, cluster: Cluster) -> bool:
    port = f"--node_manager_port={cluster.worker_node_manager_port}"
    return "raylet/raylet" in cmd and port in cmd


def _processes() -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out.append((int(d.name), cmd.strip()))
    return out


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


def _ray(token: str, *args: str) -> None:
    p = subprocess.run(
        [_ray_bin(), *args], env=env(token), capture_output=True, text=True, timeout=120
    )
    if p.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")


def start() -> Cluster:
    """Start the head (1 CPU) and one worker node (1 CPU) on loopback; wait for both."""
    port, worker_port = _free_port(), _free_port()
    token = uuid.uuid4().hex
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    _ray(token, "start", "--head", f"--port={port}", "--include-dashboard=false", *common)
    address = f"127.0.0.1:{port}"
    _ray(token, "start", f"--address={address}", f"--node-manager-port={worker_port}", *common)
    cluster = Cluster(address, worker_port, token)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = subprocess.run(
            [_ray_bin(), "status", f"--address={address}"],
            env=cluster.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if status.stdout.count(" node_") >= 2:
            return cluster
        time.sleep(1)
    stop(token)
    raise RuntimeError(f"the Ray cluster at {address} did not report two nodes within 60 s")


def stop(token: str = "") -> None:
    """Stop every Ray process this machine runs (the cluster's)."""
    subprocess.run(
        [_ray_bin(), "stop", "--force"], env=env(token), capture_output=True, timeout=120
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: raycluster.py start|stop STATE.json", file=sys.stderr)
        return 2
    state = Path(argv[1])
    if argv[0] == "start":
        cluster = start()
        state.write_text(json.dumps(asdict(cluster)))
        print(cluster.address)
    else:
        stop(load(state).token if state.exists() else "")
        state.unlink(missing_ok=True)
    return 0


def load(state: str | Path) -> Cluster:
    return Cluster(**json.loads(Path(state).read_text()))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
