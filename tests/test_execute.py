"""The executor backends and the result cache (edgeproof.execute), without a Ray cluster
(tests/test_ray_cluster.py runs one)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgeproof.errors import MissingExtraError, OptionError
from edgeproof.execute import (
    InProcessExecutor,
    ProcessExecutor,
    ResultCache,
    make_executor,
)
from edgeproof.execute.cache import decode, encode


def _square(offset: int, x: int) -> int:
    return x * x + offset


def _slow_first(_shared: None, x: float) -> float:
    time.sleep(x)
    return x


def _die_once(marker_dir: str, x: int) -> int:
    """Kills its worker process the first time it sees x == 2 (a crash in native code)."""
    marker = Path(marker_dir) / f"died-{x}"
    if x == 2 and not marker.exists():
        marker.write_text("once")
        os._exit(1)
    return x * 10


def _always_die(_shared: None, x: int) -> int:
    if x == 1:
        os._exit(1)
    return x


def _raise(_shared: None, x: int) -> int:
    if x == 1:
        raise ValueError("bad item 1")
    return x


def test_in_process_executor_runs_every_item_with_the_shared_value() -> None:
    outs = list(InProcessExecutor().run(_square, [1, 2, 3], 100))
    assert [(o.index, o.value) for o in outs] == [(0, 101), (1, 104), (2, 109)]
    assert all(o.ok and o.attempts == 1 for o in outs)


def test_an_exception_of_the_task_is_its_outcome_and_the_others_go_on() -> None:
    outs = {o.index: o for o in InProcessExecutor().run(_raise, [0, 1, 2], None)}
    assert outs[0].value == 0 and outs[2].value == 2
    assert outs[1].error == "ValueError: bad item 1" and outs[1].traceback


def test_admit_leaves_tasks_out_with_the_reason() -> None:
    outs = list(
        InProcessExecutor().run(_square, [1, 2, 3], 0, admit=lambda i: "budget" if i else None)
    )
    assert [o.not_started for o in outs] == [None, "budget", "budget"]
    assert outs[0].value == 1


@pytest.mark.slow  # spawns worker processes
def test_process_pool_yields_in_completion_order() -> None:
    with ProcessExecutor(2) as ex:
        order = [o.index for o in ex.run(_slow_first, [1.5, 0.0, 0.0], None)]
    assert order[-1] == 0  # the slow first item finishes last


@pytest.mark.slow
def test_a_task_whose_worker_process_dies_is_retried_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    with ProcessExecutor(2, max_retries=2) as ex:
        outs = {o.index: o for o in ex.run(_die_once, [0, 1, 2, 3], str(tmp_path))}
    assert {i: o.value for i, o in outs.items()} == {0: 0, 1: 10, 2: 20, 3: 30}
    assert outs[2].attempts == 2


@pytest.mark.slow
def test_a_task_that_always_kills_its_worker_fails_after_its_retries_and_the_rest_finish() -> None:
    with ProcessExecutor(2, max_retries=1) as ex:
        outs = {o.index: o for o in ex.run(_always_die, [0, 1, 2], None)}
    assert outs[0].value == 0 and outs[2].value == 2
    assert outs[1].error is not None and "died" in outs[1].error
    assert outs[1].attempts == 2


def test_make_executor_refuses_an_unknown_backend_and_a_stray_address() -> None:
    with pytest.raises(OptionError, match="executor"):
        make_executor("threads")
    with pytest.raises(OptionError, match="ray_address"):
        make_executor("processes", 2, ray_address="auto")
    with pytest.raises(OptionError, match="workers"):
        make_executor("processes", 0)


def test_ray_executor_without_ray_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ModuleNotFoundError
    with pytest.raises(MissingExtraError, match=r"pip install 'edgeproof\[ray\]'"):
        make_executor("ray", 1)


def test_ray_executor_refuses_an_address_where_nothing_answers_quickly() -> None:
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(OptionError, match="no Ray cluster answers") as err:
        make_executor("ray", 1, ray_address=f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 30
    assert "\n" not in str(err.value)
    with pytest.raises(OptionError, match="HOST:PORT"):
        make_executor("ray", 1, ray_address="nonsense")


@dataclass(frozen=True)
class _Row:
    name: str
    values: np.ndarray
    score: float
    parts: tuple[str, ...] = ()
    by_class: dict[int, float] | None = None


def test_cache_round_trips_results_bit_for_bit(tmp_path: Path) -> None:
    row = _Row(
        "a",
        np.array([1.5, np.nan, -np.inf], dtype=np.float32),
        float("nan"),
        ("x", "y"),
        {0: 0.1, 7: float("inf")},
    )
    cache = ResultCache(tmp_path, [_Row])
    key = ResultCache.key("m", "digest", {"steps": 3})
    assert cache.get(key) is None
    cache.put(key, row)
    back = ResultCache(tmp_path, [_Row]).get(key)
    assert isinstance(back, _Row)
    assert back.values.dtype == np.float32
    assert back.values.tobytes() == row.values.tobytes()
    assert np.isnan(back.score) and back.parts == ("x", "y")
    assert back.by_class == {0: 0.1, 7: float("inf")}
    assert encode(np.float32(0.25), {}) != encode(0.25, {})  # numpy scalars keep their dtype
    assert decode(encode(np.float32(0.25), {}), {}).dtype == np.float32


def test_cache_key_changes_with_any_part() -> None:
    assert ResultCache.key("a", 1) == ResultCache.key("a", 1)
    assert ResultCache.key("a", 1) != ResultCache.key("a", 2)


def test_cache_decodes_only_the_allowed_types(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path, [_Row])
    with pytest.raises(TypeError, match="not a cacheable"):
        encode(_Other(), cache.types)
    key = ResultCache.key("k")
    path = tmp_path / key[:2] / f"{key}.json"
    path.parent.mkdir(parents=True)
    doc = {"key": key, "version": _version(), "result": {"$c": "Popen", "f": {"args": "ls"}}}
    path.write_text(json.dumps(doc))
    assert cache.get(key) is None and cache.stats.unreadable == 1


@dataclass(frozen=True)
class _Other:
    x: int = 1


def _version() -> str:
    from edgeproof import __version__

    return __version__


def test_a_cache_written_by_another_version_is_ignored_and_said_once(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path, [_Row])
    key = ResultCache.key("k")
    cache.put(key, _Row("a", np.zeros(1), 1.0))
    (tmp_path / "cache.json").write_text(
        json.dumps({"format": "edgeproof-result-cache", "version": "0.0.1"})
    )
    old = ResultCache(tmp_path, [_Row])
    assert old.get(key) is None
    notes = old.stats.notes(tmp_path)
    assert len(notes) == 1 and "edgeproof 0.0.1" in notes[0] and "ignored" in notes[0]
    assert json.loads((tmp_path / "cache.json").read_text())["version"] == _version()


def test_a_corrupt_cache_entry_is_recomputed_not_fatal(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path, [_Row])
    key = ResultCache.key("k")
    cache.put(key, _Row("a", np.zeros(1), 1.0))
    (tmp_path / key[:2] / f"{key}.json").write_text("{truncated")
    assert ResultCache(tmp_path, [_Row]).get(key) is None
