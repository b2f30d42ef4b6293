"""Inputs are never outputs, and writes are atomic with no temporary file left behind.

``check_output_paths`` is what every command calls before it reads anything; the atomic-write
tests kill a real child process in the middle of a write (SIGTERM, SIGINT, SIGKILL). See
docs/security.md ("Outputs").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeproof.atomic import atomic_write_bytes
from edgeproof.errors import OptionError
from edgeproof.outputs import Output, check_output_paths

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    return path


def test_output_that_is_the_input_is_refused(model: Path) -> None:
    with pytest.raises(OptionError, match=r"^out: .*model\.safetensors is the input"):
        check_output_paths([model], [model])


def test_output_reaching_the_input_through_a_symlink_is_refused(model: Path) -> None:
    link = model.parent / "alias.json"
    link.symlink_to(model)
    with pytest.raises(OptionError, match="is the input"):
        check_output_paths([link], [model])


def test_output_hard_linked_to_the_input_is_refused(model: Path) -> None:
    twin = model.parent / "twin.json"
    os.link(model, twin)
    with pytest.raises(OptionError, match="is the input"):
        check_output_paths([twin], [model])


def test_output_folder_containing_an_input_is_refused(model: Path) -> None:
    with pytest.raises(OptionError, match=r"output folder .* contains the input"):
        check_output_paths([Output.folder(model.parent, ["report.json"])], [model])


def test_output_folder_file_that_would_replace_an_input_is_refused(tmp_path: Path) -> None:
    baseline = tmp_path / "old" / "report.json"
    baseline.parent.mkdir()
    baseline.write_text("{}")
    out = tmp_path / "new"
    out.mkdir()
    (out / "report.json").symlink_to(baseline)
    with pytest.raises(OptionError, match=r"new/report\.json is the input"):
        check_output_paths([Output.folder(out, ["report.json", "report.html"])], [baseline])


def test_output_inside_an_input_folder_is_refused(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    with pytest.raises(OptionError, match="is inside the input folder"):
        check_output_paths([Output.folder(images / "cat" / "runs")], [images])


def test_output_onto_a_folder_or_under_a_file_is_refused(tmp_path: Path, model: Path) -> None:
    with pytest.raises(OptionError, match=r"is a folder"):
        check_output_paths([tmp_path], [])
    with pytest.raises(OptionError, match=r"cannot be created: .* is a file"):
        check_output_paths([model / "seal.json"], [])
    with pytest.raises(OptionError, match=r"is a file, not a folder"):
        check_output_paths([Output.folder(model)], [])


def test_separate_output_and_builtin_or_missing_inputs_pass(tmp_path: Path, model: Path) -> None:
    check_output_paths(
        [tmp_path / "out" / "seal.json", Output.folder(tmp_path / "runs", ["report.json"])],
        [model, "builtin:digits", None, tmp_path / "not-there"],
    )


def test_option_name_is_the_library_parameter_given(model: Path) -> None:
    with pytest.raises(OptionError, match=r"^protect_out: "):
        check_output_paths([Output.file(model, option="protect_out")], [model])


def test_atomic_write_onto_a_folder_names_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"^out: .* is a folder"):
        atomic_write_bytes(tmp_path, b"x")
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OptionError, match=r"^out: .*cannot be written"):
        atomic_write_bytes(blocker / "x.json", b"x")


def _writer(tmp_path: Path, target: Path, payload: str) -> subprocess.Popen[str]:
    """A child that starts an atomic write of ``payload`` and stalls inside ``fsync``."""
    code = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(SRC)!r})
        from edgeproof import atomic
        def stall(fd):
            print("writing", flush=True)
            time.sleep(60)
        atomic.os.fsync = stall
        atomic.atomic_write_bytes({str(target)!r}, {payload!r}.encode())
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    return child


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_during_a_write_leaves_no_temp_file_and_the_old_target(
    tmp_path: Path, sig: int
) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    child = _writer(tmp_path, target, "new")
    assert _temps(tmp_path)  # the temporary file exists while the write stalls
    child.send_signal(sig)
    child.communicate(timeout=30)
    assert child.returncode != 0
    assert _temps(tmp_path) == []
    assert target.read_text() == "old"


def test_kill_9_during_a_write_never_leaves_a_half_written_target(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    child = _writer(tmp_path, target, "new" * 1000)
    child.kill()
    child.communicate(timeout=30)
    assert target.read_text() == "old"


def test_seal_written_over_a_sealed_file_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    from edgeproof.integrity.seal import seal_paths

    model = tmp_path / "w.bin"
    model.write_bytes(b"weights" * 100)
    seal = seal_paths([model], base_dir=tmp_path, threads=1)
    with pytest.raises(OptionError, match=r"^out: .*w\.bin is the input"):
        seal.write(model)
    assert model.read_bytes() == b"weights" * 100


def test_report_written_into_the_folder_of_its_model_is_refused(tmp_path: Path) -> None:
    from edgeproof.report.files import write_report
    from edgeproof.report.report import Report

    model = tmp_path / "m.safetensors"
    model.write_bytes(b"x")
    report = Report(
        model={"path": str(model)}, data=None, threat={}, checks=[], seed=0, created="now"
    )
    with pytest.raises(OptionError, match=r"^out_dir: the output folder .* contains the input"):
        write_report(report, tmp_path)
