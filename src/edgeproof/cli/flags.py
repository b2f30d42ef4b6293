"""The one table from library parameters to command-line flags.

Library errors name library parameters (:func:`edgeproof.errors.param`); the CLI prints them
with the flag that sets each parameter. A parameter without a flag (a check setting such as
``adversarial.max_samples``) is printed as its library name. ``tests/test_cli_flags.py`` checks
that every flag in :data:`FLAGS` exists in the parser.
"""

from __future__ import annotations

from edgeproof.errors import EdgeproofError

__all__ = ["FLAGS", "flag_of", "render"]

FLAGS: dict[str, str] = {
    # model
    "arch": "--arch",
    "trust_code": "--trust-code",
    "trust_pickle": "--trust-pickle",
    "allow_outside": "--allow-outside",
    "raw": "--raw",
    "out_dir": "--out",
    "spec": "--shape",
    "input": "--input",
    "input_values": "--input-value",
    "output": "--output",
    "scores": "--scores",
    # data
    "data": "--data",
    "datasets": "--data",
    "x_calib": "--data",
    "evaluation": "--eval",
    "x_key": "--x-key",
    "y_key": "--y-key",
    "label_column": "--label-column",
    "header": "--header",
    "classes": "--classes",
    # input specification and threat model
    "shape": "--shape",
    "domain": "--domain",
    "kind": "--kind",
    "feature_bounds": "--feature-bounds",
    "mean": "--mean",
    "std": "--std",
    "norm": "--norm",
    "eps": "--eps",
    # running
    "checks": "--checks",
    "set": "--set",
    "threads": "--threads",
    "seed": "--seed",
    "batch_size": "--batch-size",
    "out": "--out",
    "policy": "--policy",
    "baseline": "--baseline",
    # train
    "epochs": "--epochs",
    "lr": "--lr",
    # compress
    "max_drop": "--max-drop",
    "max_class_drop": "--max-class-drop",
    "max_size": "--max-size",
    "time_budget_s": "--time-budget",
    "early_exit": "--early-exit",
    "criterion": "--exit-criterion",
    # protect
    "budget": "--budget",
    "num_layers": "--layers",
    # integrity
    "chunk_size": "--chunk-size",
    "key": "--key",
    "public_key": "--pub",
    "item": "--item",
    # scan
    "jobs": "--jobs",
    "workers": "--jobs",
    "executor": "--executor",
    "ray_address": "--ray-address",
    "cache": "--cache",
    "detectors": "--detectors",
    "threshold_overrides": "--threshold",
    "thresholds": "--thresholds",
    "freeeagle_steps": "--freeeagle-steps",
    "nc_epochs": "--nc-epochs",
    # make-population
    "clean_per_arch": "--clean",
    "backdoored_per_arch": "--backdoored",
    "archs": "--archs",
    "families": "--families",
    "poison_rate": "--poison-rate",
    # explain
    "methods": "--methods",
    "target": "--target",
    "n_steps": "--n-steps",
    "tolerance": "--tolerance",
    "samples": "--samples",
}


def flag_of(name: str) -> str:
    """The flag that sets library parameter ``name`` (the name itself if none does); a check
    setting ``CHECK.SETTING`` is set with ``--set CHECK.SETTING=VALUE``."""
    if name in FLAGS:
        return FLAGS[name]
    check, dot, setting = name.partition(".")
    if dot and check.isidentifier() and setting.isidentifier():
        return f"--set {name}"
    return name


def render(exc: EdgeproofError) -> str:
    """The error's message in CLI terms: each named parameter shown as its flag."""
    return exc.render(flag_of)
