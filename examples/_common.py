"""What every example shares: where its model comes from and its command line.

Each example audits, compresses or seals a small LeNet-5 trained on the built-in 8x8 digits
(``edgeproof.demo.demo_model``: trained once, a few seconds, then cached in ``~/.cache/edgeproof``),
or the ``--model`` you give it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edgeproof.models import LoadedModel, load_model


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", type=Path, help="a .safetensors model with its .json sidecar")
    p.add_argument("--out", type=Path, required=True, help="folder for what the example writes")
    return p


def trained_model(path: Path | None) -> LoadedModel:
    """``path`` loaded, or the demo's digits LeNet-5 (trained and cached on first use)."""
    torch.set_num_threads(1)
    if path is not None:
        return load_model(path)
    from edgeproof.demo import demo_model

    model, _cached, _seconds = demo_model()
    return model
