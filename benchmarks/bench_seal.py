"""Seal throughput vs ``sha256sum`` of the same bytes; verify time; weight-guard overhead.

Run: ``python benchmarks/bench_seal.py`` (writes docs/benchmarks/seal.md). Creates a 100 MB
safetensors model and a 50k-record npz dataset in a temporary folder (deleted afterwards).

Two tables: the **whole commands** as a user runs them (``edgeproof seal`` / ``edgeproof
verify`` processes against a ``sha256sum`` process over the same two files, paired: each round
runs the three commands back to back, medians of ``PAIRED`` rounds, peak RSS of each child from
``wait4``), and the library calls in this process against plain ``hashlib.sha256`` over the same
bytes (medians of ``REPEATS`` runs).
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from edgeproof.integrity.guard import WeightGuard
from edgeproof.integrity.seal import Seal, model_item_from_weights, seal_paths, verify_seal

REPEATS = 3
PAIRED = 7
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "seal.md"


def _row(task: str, mb: float, t: float, peer: float, *, peer_rate: bool = False) -> str:
    """One table row: size, our time and rate, ``sha256sum``'s time (and rate), their ratio."""
    peer_cell = f"{peer:.3f} s ({mb / peer:.0f} MB/s)" if peer_rate else f"{peer:.3f} s"
    ours = f"{t:.3f} s | {mb / t:.0f} MB/s"
    return f"| {task} | {mb:.0f} MB | {ours} | {peer_cell} | {peer / t:.2f}× |"


def median_s(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sha256sum_s(path: Path) -> float:
    exe = shutil.which("sha256sum")
    if exe is None:
        raise SystemExit("sha256sum not found: install coreutils to run this benchmark")
    return median_s(lambda: subprocess.run([exe, str(path)], check=True, capture_output=True))


_LAUNCHER = (
    "import os,sys,time,json\n"
    "t=time.perf_counter(); pid=os.fork()\n"
    "if pid==0:\n"
    "    fd=os.open(os.devnull,os.O_WRONLY); os.dup2(fd,1); os.execvp(sys.argv[1],sys.argv[1:])\n"
    "_,st,ru=os.wait4(pid,0)\n"
    "print(json.dumps([time.perf_counter()-t,ru.ru_utime+ru.ru_stime,ru.ru_maxrss/1024,"
    "os.waitstatus_to_exitcode(st)]))\n"
)


def _check_package() -> str:
    """Where ``python -m edgeproof`` imports the package from (it must be the code measured)."""
    import edgeproof

    out = subprocess.run(
        [sys.executable, "-c", "import edgeproof; print(edgeproof.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if Path(out).resolve() != Path(edgeproof.__file__).resolve():
        raise SystemExit(f"the child processes import {out}, this benchmark {edgeproof.__file__}")
    return str(Path(out).resolve().parents[1])


def run_child(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + sys) and peak RSS (MB) of one command, run by a small
    launcher process (so the peak is the command's, not this 700 MB benchmark's at fork)."""
    import json

    out = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, *cmd], capture_output=True, text=True, check=True
    )
    wall, cpu, rss, code = json.loads(out.stdout.strip().splitlines()[-1])
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}): {out.stderr}")
    return float(wall), float(cpu), float(rss)


def hashlib_s(paths: list[Path]) -> float:
    """Plain ``hashlib.sha256`` of every byte of ``paths`` (1 MiB reads), in this process."""
    import hashlib

    def run() -> None:
        for p in paths:
            h = hashlib.sha256()
            with p.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            h.hexdigest()

    return median_s(run)


def whole_commands(d: Path, model: Path, data: Path) -> tuple[list[str], dict[str, float]]:
    """The seal and verify commands against ``sha256sum`` of the same files, paired rounds."""
    exe = shutil.which("sha256sum")
    # this interpreter and this checkout's package (not an installed console script, which may
    # import another copy): the launcher passes its environment (PYTHONPATH included) on
    ep = [sys.executable, "-m", "edgeproof"]
    if exe is None:
        raise SystemExit("sha256sum not found: install coreutils to run this benchmark")
    seal = d / "both.seal.json"
    cmds = {
        "sha256sum": [exe, str(model), str(data)],
        "seal": [*ep, "seal", str(model), str(data), "--out", str(seal), "--threads", "1"],
        "verify": [*ep, "verify", str(seal), "--threads", "1"],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    cpus: dict[str, list[float]] = {k: [] for k in cmds}
    rss: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(PAIRED):
        for name, cmd in cmds.items():
            if name == "seal":
                seal.unlink(missing_ok=True)
            wall, cpu, peak = run_child(cmd)
            times[name].append(wall)
            cpus[name].append(cpu)
            rss[name].append(peak)
    mb = (model.stat().st_size + data.stat().st_size) / 1e6
    peer = statistics.median(times["sha256sum"])
    peer_cpu = statistics.median(cpus["sha256sum"])
    rows = []
    cpu_ratio: dict[str, float] = {}
    for name in ("seal", "verify"):
        t, c = statistics.median(times[name]), statistics.median(cpus[name])
        cpu_ratio[name] = c / peer_cpu
        ratios = sorted(a / b for a, b in zip(times[name], times["sha256sum"]))
        rows.append(
            f"| `edgeproof {name}` (1 thread) | {mb:.0f} MB | {t:.3f} s | {peer:.3f} s | "
            f"{t / peer:.2f}× (paired {ratios[0]:.2f}–{ratios[-1]:.2f}) | {c:.2f} s | "
            f"{peer_cpu:.2f} s | {c / peer_cpu:.2f}× | {statistics.median(rss[name]):.0f} MB |"
        )
    rows.append(
        f"| `sha256sum` | {mb:.0f} MB | {peer:.3f} s | — | 1.00× | {peer_cpu:.2f} s | — | "
        f"1.00× | {statistics.median(rss['sha256sum']):.0f} MB |"
    )
    return rows, cpu_ratio


def main() -> None:
    src = _check_package()
    print(f"measuring the package under {src}", file=sys.stderr)
    torch.set_num_threads(1)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeproof-bench-seal-") as tmp:
        d = Path(tmp)
        rng = np.random.default_rng(0)
        model = d / "model.safetensors"
        save_file(
            {
                f"layer{i:02d}.weight": rng.standard_normal((1024, 1024), dtype=np.float32)
                for i in range(25)
            },
            str(model),
        )
        mb = model.stat().st_size / 1e6
        peer = sha256sum_s(model)
        for threads in (1, 2):
            t = median_s(functools.partial(seal_paths, [model], base_dir=d, threads=threads))
            rows.append(_row(f"seal model, {threads} thread(s)", mb, t, peer, peer_rate=True))
        seal = seal_paths([model], base_dir=d, threads=2)
        seal.write(d / "m.seal.json")
        t = median_s(lambda: verify_seal(Seal.read(d / "m.seal.json"), base_dir=d, threads=2))
        rows.append(_row("verify model (unchanged; read seal + re-hash), 2 threads", mb, t, peer))
        seal_kb = (d / "m.seal.json").stat().st_size / 1e3

        data = d / "val.npz"
        np.savez(
            data, x=rng.random((50_000, 1, 28, 28), dtype=np.float32), y=rng.integers(0, 10, 50_000)
        )
        dmb = data.stat().st_size / 1e6
        dpeer = sha256sum_s(data)
        t = median_s(lambda: seal_paths([data], base_dir=d, threads=2))
        rows.append(
            _row("seal 50k-record npz (load + per-record hashes)", dmb, t, dpeer, peer_rate=True)
        )
        dseal = seal_paths([data], base_dir=d, threads=2)
        dseal.write(d / "d.seal.json")
        t = median_s(lambda: verify_seal(Seal.read(d / "d.seal.json"), base_dir=d, threads=2))
        rows.append(
            _row("verify 50k-record npz (unchanged; read seal + load + re-hash)", dmb, t, dpeer)
        )
        dseal_mb = (d / "d.seal.json").stat().st_size / 1e6
        whole, cpu_ratio = whole_commands(d, model, data)
        plain = hashlib_s([model, data])
        floor = hashlib_s([model, data, data, data])
        t_lib = median_s(lambda: seal_paths([model, data], base_dir=d, threads=1))
        both = seal_paths([model, data], base_dir=d, threads=1)
        both.write(d / "both2.seal.json")
        t_ver = median_s(
            lambda: verify_seal(Seal.read(d / "both2.seal.json"), base_dir=d, threads=1)
        )
        lib_rows = [
            f"| `seal_paths([model, data], threads=1)` | {t_lib:.3f} s | {plain:.3f} s | "
            f"{t_lib / plain:.2f}× | {floor:.3f} s | {t_lib / floor:.2f}× |",
            f"| `verify_seal(Seal.read(seal), threads=1)` | {t_ver:.3f} s | {plain:.3f} s | "
            f"{t_ver / plain:.2f}× | {floor:.3f} s | {t_ver / floor:.2f}× |",
        ]

    # weight guard overhead on a ~1.1M-parameter MLP, batch 32
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    ).eval()
    x = torch.randn(32, 784)
    item = model_item_from_weights(net.state_dict(), threads=1)
    params = sum(p.numel() for p in net.parameters())

    def fwd() -> None:
        with torch.inference_mode():
            for _ in range(20):
                net(x)

    base = median_s(fwd, 5) / 20
    full = WeightGuard(net, item).attach()
    t_full = median_s(fwd, 5) / 20
    full.detach()
    protect = {
        "tensors": [{"name": "0.weight", "index": int(i)} for i in rng.integers(0, 784 * 1024, 100)]
    }
    guard = WeightGuard(net, item, protect=protect).attach()
    t_prot = median_s(fwd, 5) / 20
    chunks = guard.check().chunks_checked
    guard.detach()

    lines = [
        "## Seal and verify",
        "",
        "### Whole commands",
        "",
        f"`python -m edgeproof seal MODEL DATA --out S --threads 1` and `python -m edgeproof "
        "verify S --threads 1` (this checkout's code, the benchmark's interpreter and "
        "environment) as processes against `sha256sum MODEL DATA` (coreutils), the 100 MB "
        "safetensors model "
        f"and the 50k-record npz together; {PAIRED} rounds, each running the three commands "
        "back to back (page cache warm), medians; the ratio is edgeproof's time over "
        "`sha256sum`'s (≤ 1 is faster), with the range of the per-round ratios; peak RSS of "
        "each process (`wait4` in a small launcher). Both commands include interpreter "
        "start-up and imports. CPU = user + system seconds of the process: on a machine shared "
        "with other jobs it is the steadier measure of the work done. Peak RSS counts the pages "
        "of the memory-mapped files only while they are being hashed: both commands read the "
        "files through a memory map (no copy) and drop each range from the resident set once "
        "it is hashed (`MADV_DONTNEED`; the pages stay in the page cache).",
        "",
        "| command | bytes | wall | sha256sum wall | wall ratio | CPU | sha256sum CPU | "
        "CPU ratio | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
        *whole,
        "",
        "In process, against plain `hashlib.sha256` over the same bytes (1 MiB reads), once, and "
        "as often as the seal commits them: a dataset item of an `.npz` commits the SHA-256 of "
        "the whole file, of each archive member and of each record's content, which for a "
        "stored (uncompressed) archive are three SHA-256 passes over the same ~157 MB (SHA-256 "
        "states cannot be shared between them), the model's bytes once (plus the chunk "
        "syndromes). edgeproof reads each byte from memory once and feeds all three digests "
        "(and the zip CRC on sealing) from the same block; the 'committed' column is the floor "
        "for that work with `hashlib`:",
        "",
        "| call | edgeproof | hashlib, each byte once | ratio | hashlib, as committed "
        "(model + 3× npz) | ratio |",
        "|---|---|---|---|---|---|",
        *lib_rows,
        "",
        "Targets (issue 13): whole command ≤ 1.0× `sha256sum` — seal "
        f"{cpu_ratio['seal']:.2f}×, verify {cpu_ratio['verify']:.2f}× (CPU; "
        f"{'met' if max(cpu_ratio.values()) <= 1.0 else 'not met'} in this run); in process "
        f"≤ 1.1× one `hashlib` pass — {t_lib / plain:.2f}× for seal: not met, and not reachable "
        "without changing what a seal commits, since the npz's bytes are hashed three times "
        "(file, member, records) and the model's chunks also get syndromes; against the "
        f"committed floor it is {t_lib / floor:.2f}×. `verify` of an unchanged item checks only "
        "what its leaves commit: a single-file data set by its file's SHA-256 (one pass; its "
        "records are read again only when that differs, to say what changed), a model by its "
        "chunks' SHA-256 (the syndromes, which only locate a change, are computed when a chunk "
        "differs). What remains of the whole commands beyond hashing is interpreter start-up "
        "and imports (numpy; `jsonschema` for reading a seal), one Merkle tree over the 50k "
        "records (read: the stored digests must reproduce the item root; seal: the root), and "
        "the JSON. coreutils `sha256sum` here runs without SHA-NI (~200 MB/s against "
        "`hashlib`'s ~1.4 GB/s), which is what makes ≤ 1× possible at all.",
        "",
        "### Library calls",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared), Python {sys.version.split()[0]}; hashing threads as listed; torch threads 1. "
        f"Medians of {REPEATS} runs; the peer is coreutils `sha256sum` of the same file, run in "
        "the same process, as the physical limit of reading and hashing every byte once. Ratio = "
        "peer time / edgeproof time (≥ 1 means faster than `sha256sum`). Caveat: `hashlib` "
        "uses OpenSSL's SHA-NI code path while this machine's coreutils `sha256sum` is "
        "markedly slower per byte; ratios above 1 come mostly from that, not from cleverness. "
        "The machine was shared with other jobs, so absolute times are noisy.",
        "",
        "| task | size | edgeproof | throughput | sha256sum | ratio |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Seal size: {seal_kb:.0f} KB for the {mb:.0f} MB model (64 KiB chunks: SHA-256 + "
        f"syndrome per chunk), {dseal_mb:.1f} MB for the 50k-record dataset (id, content "
        "SHA-256, label per record).",
        "",
        "Weight guard (forward pre-hook), MLP with "
        f"{params / 1e6:.2f}M parameters, batch 32, per forward:",
        "",
        "| mode | forward | overhead |",
        "|---|---|---|",
        f"| no guard | {base * 1e3:.2f} ms | — |",
        f"| guard, every sealed chunk | {t_full * 1e3:.2f} ms | "
        f"+{(t_full - base) * 1e3:.2f} ms ({t_full / base:.2f}×) |",
        f"| guard, protect set of 100 elements ({chunks} chunks) | {t_prot * 1e3:.2f} ms | "
        f"+{(t_prot - base) * 1e3:.2f} ms ({t_prot / base:.2f}×) |",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
