"""The build context: what every step of every candidate reads, and what they share.

One :class:`BuildContext` per search. It holds the input specification, the calibration records
(and their labels, for the steps that train), the thread count and the seed — and the caches
that make a dozen candidates cheap: per module, one :class:`~edgeproof.compress.quantize.Prepared`
(BatchNorm-folded module, fp32 graph, activation statistics on both sides, computed once and read
by every calibration method and every candidate built on that module), and per chain prefix the
output of its transform steps (``channels25`` and ``channels25+int8`` remove the channels once).

The caches belong to one process: they are keyed by the identity of the module objects, so a
context that is pickled (sent to a worker process or to Ray with the search's shared inputs)
arrives with empty caches, and each worker fills its own. What they hold is computed
deterministically from the module, the calibration records and the seed (activation values
subsampled with a seeded generator), so a worker computes the same values the driver would.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np
from torch import nn

from edgeproof.compress.quantize import Prepared
from edgeproof.data.dataset import Dataset
from edgeproof.errors import SpecError, param
from edgeproof.spec import InputSpec

__all__ = ["BuildContext"]

T = TypeVar("T")


class BuildContext:
    """Settings and shared caches of one search.

    Args:
        spec: the model's input specification (shape without batch).
        calib: the calibration records (labelled: early-exit heads train on them).
        threads: CPU threads for ONNX Runtime sessions built while building candidates.
        seed: the seed of every random choice of a step.
        calibration_samples: at most this many records calibrate activation ranges.
    """

    def __init__(
        self,
        spec: InputSpec,
        calib: Dataset,
        *,
        threads: int = 1,
        seed: int = 0,
        calibration_samples: int = 256,
    ) -> None:
        if tuple(calib.sample_shape) != tuple(spec.shape):
            raise SpecError(
                f"{param('data')}: {calib.name} has sample shape {calib.sample_shape} but the "
                f"model expects {spec.shape}; pass data shaped like the model input"
            )
        self.spec = spec
        self.calib = calib
        self.threads = threads
        self.seed = seed
        self.calibration_samples = calibration_samples
        self._prepared: dict[int, tuple[nn.Module, Prepared]] = {}
        self._graphs: dict[int, bytes] = {}
        self._steps: dict[Hashable, Any] = {}

    @property
    def x_calib(self) -> np.ndarray:
        return self.calib.x

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes or self.calib.num_classes

    def prepared(self, module: nn.Module) -> Prepared:
        """The :class:`Prepared` of ``module`` on the calibration records (built once)."""
        key = id(module)
        hit = self._prepared.get(key)
        if hit is None or hit[0] is not module:
            x = self.x_calib[: self.calibration_samples]
            hit = (module, Prepared(module, self.spec.shape, x))
            self._prepared[key] = hit
        return hit[1]

    def fp32_graph(self, module: nn.Module) -> bytes:
        """The serialised fp32 graph of ``module`` (BatchNorm folded), exported once."""
        prep = self.prepared(module)
        key = id(prep)
        if key not in self._graphs:
            self._graphs[key] = prep.fp32.SerializeToString()
        return self._graphs[key]

    def step_output(self, key: Hashable, make: Callable[[], T]) -> T:
        """The output of a chain prefix, built once per search (``key`` names the prefix)."""
        if key not in self._steps:
            self._steps[key] = make()
        out: T = self._steps[key]
        return out

    def __getstate__(self) -> dict[str, Any]:
        """The settings without the caches (module docstring: keyed by object identity, which
        another process does not share)."""
        state = dict(self.__dict__)
        state.update(_prepared={}, _graphs={}, _steps={})
        return state

    def __repr__(self) -> str:
        return f"BuildContext(spec={self.spec.shape}, calib={len(self.calib)} records)"
