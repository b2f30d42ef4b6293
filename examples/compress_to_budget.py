"""Compress a model to a size budget and read the trust ledger.

Every candidate (int8, int4 weights, pruned + int8, ...) is exported to ONNX, measured the same
way (accuracy with its confidence interval, size, latency on ONNX Runtime) and re-audited
(here: calibration); the ledger shows what each costs, and the selection says which met the
budget.

    python examples/compress_to_budget.py --out runs/compressed
"""

from __future__ import annotations

import copy
import sys

import numpy as np
from _common import parser, trained_model

from edgeproof import load_data
from edgeproof.compress import Budget, compress, write_artefacts
from edgeproof.compress.recipes import default_recipes


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    model = trained_model(args.model)
    assert model.module is not None and model.spec is not None
    train = load_data("builtin:digits/train")
    test = load_data("builtin:digits")

    # under a quarter of the float32 graph's 87 kB, at most 3 points of accuracy lost
    budget = Budget(max_size=20_000, max_drop=0.03, time_budget_s=120)
    recipes = [r for r in default_recipes() if r.name in ("int8-percentile", "w4g32")]
    result = compress(
        copy.deepcopy(model.module),
        model.spec,
        train.subset(np.arange(256)),  # calibration records
        evaluation=test,
        budget=budget,
        recipes=recipes,
        checks=("calibration",),
        arch=model.arch,
    )

    ledger = result.ledger
    print(f"{'candidate':<18}{'bytes':>9}{'accuracy':>10}  95% CI           ECE")
    for row in ledger.rows:
        ece = row.trust_value("calibration.ece")
        ci = f"[{row.accuracy_ci.low:.3f}, {row.accuracy_ci.high:.3f}]"
        ece_text = "-" if ece is None else f"{ece:.3f}"
        print(f"{row.name:<18}{row.size_bytes:>9}{row.accuracy:>10.3f}  {ci:<16} {ece_text}")
    for skipped in ledger.skipped:
        print(f"skipped {skipped.name}: {skipped.reason}")
    print(result.selection.message)

    paths = write_artefacts(result, args.out, source="builtin:digits", data=test)
    print("wrote", ", ".join(sorted(p.name for p in paths)))
    return 0 if result.selection.met_budget else 1


if __name__ == "__main__":
    sys.exit(main())
