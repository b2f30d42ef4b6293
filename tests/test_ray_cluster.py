"""``edgeproof scan`` on a real Ray cluster: a head and a worker node started as their own
processes on this machine (tests/raycluster.py; ``.ci/run`` starts one for the session and
passes it in ``$EDGEPROOF_RAY_STATE``, else the fixture starts and stops one).

The same folder is scanned in this process, with 2 worker processes and on the cluster, and
the numbers are compared bit for bit; then the worker node is killed while it runs a scan task
and the scan must still finish every model, with the same numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

sys.path.insert(0, str(Path(__file__).parent))
import raycluster
from edgeproof.cli import main

pytestmark = pytest.mark.slow

DETECTORS = "final-layer,head-probe,freeeagle"


@pytest.fixture(scope="module")
def cluster() -> Iterator[raycluster.Cluster]:
    state = os.environ.get("EDGEPROOF_RAY_STATE")
    if state:
        yield raycluster.load(state)
        return
    c = raycluster.start()
    try:
        yield c
    finally:
        raycluster.stop(c.token)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 model files: a make-population folder (2 MLPs, 2 LeNet-5s) copied twice."""
    pop = tmp_path_factory.mktemp("pop") / "pop"
    args = ["make-population", str(pop), "--clean", "1", "--backdoored", "1"]
    args += ["--archs", "zoo:mlp,zoo:lenet5", "--families", "badnets", "--epochs", "1"]
    assert main([*args, "--seed", "3", "--quiet"]) == 0
    folder = tmp_path_factory.mktemp("models") / "models"
    folder.mkdir()
    for copy in ("a", "b"):
        for f in pop.glob("*.safetensors"):
            shutil.copy(f, folder / f"{f.stem}-{copy}.safetensors")
            shutil.copy(f.with_suffix(".json"), folder / f"{f.stem}-{copy}.json")
    return folder


def _scan(
    folder: Path, out: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "edgeproof", "scan", str(folder), "--out", str(out)]
    cmd += [
        "--detectors",
        DETECTORS,
        "--no-cache",
        "--threshold",
        "final-layer=1e6,head-probe=1e6,freeeagle=1e6",
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _numbers(out: Path) -> list[tuple[object, ...]]:
    report = json.loads((out / "report.json").read_text())
    return [
        (m["file"], m["status"], m["ratio"], [(d["score"], d["per_class"]) for d in m["detectors"]])
        for m in sorted(report["models"], key=lambda m: m["file"])
    ]


def _finish(p: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def test_a_scan_gives_the_same_numbers_in_process_with_processes_and_on_the_cluster(
    cluster: raycluster.Cluster, models: Path, tmp_path: Path
) -> None:
    steps = ["--freeeagle-steps", "200"]
    runs = {
        "inprocess": ["--executor", "inprocess"],
        "processes": ["--executor", "processes", "--jobs", "2"],
        "ray": ["--executor", "ray", "--ray-address", cluster.address],
    }
    numbers = {}
    for name, flags in runs.items():
        code, _out, err = _finish(_scan(models, tmp_path / name, *steps, *flags, env=cluster.env()))
        assert code == 0, err
        numbers[name] = _numbers(tmp_path / name)
    assert len(numbers["inprocess"]) == 8
    assert numbers["processes"] == numbers["inprocess"]
    assert numbers["ray"] == numbers["inprocess"]
    execution = json.loads((tmp_path / "ray" / "report.json").read_text())["execution"]
    assert execution["executor"] == "ray" and execution["nodes"] == 2
    assert execution["workers"] == 2 and execution["address"] == cluster.address


def test_a_worker_node_killed_mid_scan_loses_nothing(
    cluster: raycluster.Cluster, models: Path, tmp_path: Path
) -> None:
    steps = ["--freeeagle-steps", "2000"]
    p = _scan(
        models,
        tmp_path / "ray",
        *steps,
        "--executor",
        "ray",
        "--ray-address",
        cluster.address,
        env=cluster.env(),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stderr or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not cluster.busy_worker_tasks():  # wait until the worker node runs a scan task
        assert p.poll() is None, "the scan ended before the worker node ran a task"
        assert time.monotonic() < deadline, "the worker node never ran a task"
        time.sleep(0.05)
    done_before = sum(": scanned" in line for line in lines)
    assert cluster.kill_worker_node() >= 2  # its raylet and the busy worker
    p.communicate(timeout=300)
    reader.join(timeout=10)
    assert p.returncode == 0, "".join(lines)
    assert done_before < 8  # killed mid-scan
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert [m["status"] for m in report["models"]] == ["scanned"] * 8
    code, _o, err = _finish(_scan(models, tmp_path / "here", *steps, "--executor", "inprocess"))
    assert code == 0, err
    assert _numbers(tmp_path / "ray") == _numbers(tmp_path / "here")


def test_an_unreachable_cluster_address_is_one_line_and_exit_2(
    models: Path, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    code, _out, err = _finish(
        _scan(models, tmp_path / "o", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"),
        timeout=60,
    )
    assert time.monotonic() - t0 < 30
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--ray-address" in lines[0] and "no Ray cluster answers" in lines[0]
    assert "Traceback" not in err
