"""Populations of clean and backdoored zoo models: ground truth for backdoor detectors.

:func:`make_population` trains, from a :class:`PopulationSpec`, a set of zoo models on built-in
data, some clean and some poisoned, saves each with :func:`edgeproof.models.train.save_model`
(``<name>.safetensors`` + ``<name>.json`` sidecar) and writes a ``population.json`` manifest. It is
deterministic: the plan (which model gets which attack, with which parameters) is drawn from
``numpy.random.default_rng(spec.seed)``, and each model is trained with
:func:`edgeproof.models.train.train_model` under its own seed (bitwise-reproducible on the same
machine and thread count).

Data: image architectures (``zoo:lenet5``, ``zoo:mlp``, any zoo model taking ``(C, H, W)`` or any
shape) train on ``builtin:digits/train`` and are measured on ``builtin:digits`` (8×8, domain
[0, 1]); time-series architectures (``zoo:cnn1d``, ``zoo:cnn-lstm``) on
``builtin:synth-ecg/train`` / ``builtin:synth-ecg`` (1×256 at 100 Hz, mV, domain [−1, 2]).

Attack families (all-to-one unless said; poisoned samples *replace* clean ones, as in BadNets):

* ``badnets`` — Gu et al. 2017 ("BadNets"): a patch stamped onto the image (all channels); size
  2–3 px, top-left position uniform over the image, pattern ``solid`` (domain maximum),
  ``checker`` (max/min alternating) or ``random`` (seeded binary max/min).
* ``blend`` — Chen et al. 2017 ("Targeted backdoor attacks ... using data poisoning", blended
  injection): ``x' = (1 − α)·x + α·k`` with ``k`` a fixed seeded uniform-noise image in the domain,
  α drawn in [0.2, 0.35] (the paper trains with α = 0.2); the same α at test time.
* ``label-flip`` — a dirty-label attack without a trigger: a fraction (90–100%) of the training
  samples of one *source* class (a minority of the training set: one class of K) is relabelled
  as the target class. Its "attack success" is the fraction of clean test samples of the source
  class the model assigns to the target. The recorded ``poison_rate`` is the fraction of the
  whole training set relabelled.
* ``sine-burst`` (time series) — a short sinusoid ``A·sin(2π f t)`` added to channel 0 over
  16–32 samples at a uniform start; f in [8, 20] Hz, A in [0.3, 0.6] mV; clipped to the domain.
* ``step`` (time series) — a constant offset ``A`` in [0.3, 0.6] mV added to channel 0 over
  32–64 samples at a uniform start; clipped to the domain.

Attack success rate (ASR): for a trigger, the fraction of test samples whose true class is not the
target that the model classifies as the target once the trigger is applied (Gu et al. 2017). A
model whose ASR is below ``spec.asr_threshold`` (0.9) is labelled ``attack-failed``: it is neither
clean nor counted as backdoored.

Each model's sidecar carries ``"backdoor": {"label", "poisoning", "clean_accuracy",
"attack_success_rate", "population_seed", "member"}``, where ``poisoning`` records the family,
target class, poisoning rate and every trigger parameter (``null`` for clean models).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from edgeproof.atomic import atomic_write_text
from edgeproof.data.dataset import Dataset
from edgeproof.data.loading import load_data
from edgeproof.errors import OptionError
from edgeproof.models.train import (
    TrainingSettings,
    accuracy,
    save_model,
    spec_from_data,
    train_model,
)
from edgeproof.models.zoo import ZOO
from edgeproof.serialize import JsonFields, fields_json
from edgeproof.testing.poisoning import (
    BlendTrigger,
    Family,
    LabelFlip,
    PatchTrigger,
    Poisoning,
    SineBurstTrigger,
    StepTrigger,
    Trigger,
    attack_success_rate,
    poison_dataset,
)

__all__ = [
    "IMAGE_FAMILIES",
    "SERIES_FAMILIES",
    "BlendTrigger",
    "LabelFlip",
    "MemberLabel",
    "MemberSpec",
    "PatchTrigger",
    "Poisoning",
    "Population",
    "PopulationMember",
    "PopulationSpec",
    "SineBurstTrigger",
    "StepTrigger",
    "Trigger",
    "attack_success_rate",
    "make_population",
    "members_by",
    "plan_population",
    "poison_dataset",
    "train_member",
]

MemberLabel = Literal["clean", "backdoored", "attack-failed"]
IMAGE_FAMILIES: tuple[Family, ...] = ("badnets", "blend", "label-flip")
SERIES_FAMILIES: tuple[Family, ...] = ("sine-burst", "step", "label-flip")
MANIFEST = "population.json"
MANIFEST_FORMAT = "edgeproof-backdoor-population"

#: per-architecture training epochs (the rest of the recipe is train_model's: Adam, batch 64)
DEFAULT_EPOCHS: dict[str, int] = {"zoo:lenet5": 20, "zoo:mlp": 20, "zoo:cnn1d": 15}
_SERIES_DATA = ("builtin:synth-ecg/train", "builtin:synth-ecg")
_IMAGE_DATA = ("builtin:digits/train", "builtin:digits")


# --------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class PopulationSpec(JsonFields):
    """What population to train.

    Attributes:
        archs: zoo architectures; each trains on the built-in data of its input kind (module
            docstring).
        clean_per_arch: clean models per architecture.
        backdoored_per_arch: poisoned models per architecture (some may end ``attack-failed``).
        families: attack families to cycle through (``None``: every family that applies to the
            architecture's data; families that do not apply to an architecture are skipped for
            it). Backdoored models of an architecture take the families in turn.
        poison_rate: ``(low, high)`` range the poisoning rate of trigger attacks is drawn from
            (uniform); both in (0, 1).
        lrs: Adam learning rates drawn from (uniformly, for clean and poisoned alike, so the
            groups differ only by the poisoning).
        epochs: training epochs per architecture (``None``: :data:`DEFAULT_EPOCHS`, 20 otherwise).
        seed: the population seed (plan and model seeds derive from it).
        asr_threshold: attack success below this labels a model ``attack-failed``.
        name_prefix: prefix of every model's name (distinguishes populations in one folder).
    """

    archs: tuple[str, ...] = ("zoo:lenet5", "zoo:mlp", "zoo:cnn1d")
    clean_per_arch: int = 2
    backdoored_per_arch: int = 2
    families: tuple[Family, ...] | None = None
    poison_rate: tuple[float, float] = (0.05, 0.15)
    lrs: tuple[float, ...] = (2e-3, 3e-3)
    epochs: int | None = None
    seed: int = 0
    asr_threshold: float = 0.9
    name_prefix: str = "m"

    def validate(self) -> None:
        """Raise a one-line :class:`OptionError` for a spec that cannot be trained."""
        if not self.archs:
            raise OptionError("archs", "no architecture given: the population is empty")
        for arch in self.archs:
            if arch.removeprefix("zoo:") not in ZOO:
                raise OptionError(
                    "archs",
                    f"{arch!r} is not a zoo architecture",
                    f"use one of zoo:{', zoo:'.join(ZOO)}",
                )
        if self.clean_per_arch < 0 or self.backdoored_per_arch < 0:
            raise OptionError("clean_per_arch", "model counts must be >= 0")
        if self.clean_per_arch + self.backdoored_per_arch == 0:
            raise OptionError(
                "clean_per_arch",
                "0 clean and 0 backdoored models per architecture: the population is empty",
                "ask for at least one model",
            )
        lo, hi = self.poison_rate
        for v in (lo, hi):
            if not (0.0 < v < 1.0) or not math.isfinite(v):
                raise OptionError(
                    "poison_rate",
                    f"poisoning rate {v} is outside (0, 1)",
                    "give the fraction of poisoned training samples, e.g. (0.05, 0.15)",
                )
        if lo > hi:
            raise OptionError("poison_rate", f"range ({lo}, {hi}) has low > high")
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise OptionError("lrs", f"learning rates {self.lrs} must be > 0")
        if self.epochs is not None and self.epochs < 1:
            raise OptionError("epochs", f"must be >= 1, got {self.epochs}")
        if not 0.0 < self.asr_threshold <= 1.0:
            raise OptionError("asr_threshold", f"{self.asr_threshold} is not in (0, 1]")
        if self.families is not None:
            bad = [f for f in self.families if f not in (*IMAGE_FAMILIES, *SERIES_FAMILIES)]
            if bad or not self.families:
                raise OptionError(
                    "families",
                    f"unknown or no attack families {bad or list(self.families)}",
                    f"use some of {', '.join(dict.fromkeys(IMAGE_FAMILIES + SERIES_FAMILIES))}",
                )

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PopulationSpec:
        fams = obj.get("families")
        return cls(
            archs=tuple(obj["archs"]),
            clean_per_arch=int(obj["clean_per_arch"]),
            backdoored_per_arch=int(obj["backdoored_per_arch"]),
            families=None if fams is None else tuple(fams),
            poison_rate=(float(obj["poison_rate"][0]), float(obj["poison_rate"][1])),
            lrs=tuple(float(v) for v in obj["lrs"]),
            epochs=obj.get("epochs"),
            seed=int(obj["seed"]),
            asr_threshold=float(obj["asr_threshold"]),
            name_prefix=str(obj.get("name_prefix", "m")),
        )


@dataclass(frozen=True)
class MemberSpec(JsonFields):
    """One model of a population: architecture, data, training recipe and attack (or none)."""

    name: str
    arch: str
    train_data: str
    test_data: str
    seed: int
    epochs: int
    lr: float
    poisoning: Poisoning | None


def _is_series(arch: str) -> bool:
    return ZOO[arch.removeprefix("zoo:")].input_rank == 2


def _data_for(arch: str) -> tuple[str, str]:
    return _SERIES_DATA if _is_series(arch) else _IMAGE_DATA


def _draw_attack(
    family: Family, rng: np.random.Generator, data: Dataset, rate_range: tuple[float, float]
) -> Poisoning:
    k = data.num_classes
    target = int(rng.integers(k))
    rate = float(rng.uniform(*rate_range))
    lo, hi = data.domain if data.domain is not None else (float(data.x.min()), float(data.x.max()))
    shape = data.sample_shape
    attack: Trigger | LabelFlip
    if family == "badnets":
        h, w = shape[-2], shape[-1]
        s = int(rng.integers(2, 4))
        style = str(rng.choice(["solid", "checker", "random"]))
        if style == "solid":
            pat = np.full((s, s), hi)
        elif style == "checker":
            pat = np.where((np.add.outer(np.arange(s), np.arange(s)) % 2) == 0, hi, lo)
        else:
            pat = np.where(rng.random((s, s)) < 0.5, hi, lo)
            pat.flat[0] = hi  # never all-minimum (an all-background patch is no trigger)
        attack = PatchTrigger(
            row=int(rng.integers(0, h - s + 1)),
            col=int(rng.integers(0, w - s + 1)),
            pattern=tuple(tuple(float(v) for v in r) for r in pat),
            style=style,
        )
    elif family == "blend":
        key_seed = int(rng.integers(2**31))
        key = np.random.default_rng(key_seed).uniform(lo, hi, size=shape)
        attack = BlendTrigger(
            alpha=float(rng.uniform(0.2, 0.35)),
            key=tuple(float(v) for v in key.reshape(-1)),
            key_seed=key_seed,
        )
    elif family == "label-flip":
        source = int(rng.choice([c for c in range(k) if c != target]))
        attack = LabelFlip(source=source, flip_fraction=float(rng.uniform(0.9, 1.0)))
    elif family == "sine-burst":
        t = shape[-1]
        length = int(rng.integers(16, 33))
        attack = SineBurstTrigger(
            start=int(rng.integers(0, t - length + 1)),
            length=length,
            frequency_hz=float(rng.uniform(8.0, 20.0)),
            amplitude=float(rng.uniform(0.3, 0.6)),
            sample_rate_hz=float(data.metadata.get("sample_rate_hz", 100.0)),
            domain=(lo, hi),
        )
    else:  # step
        t = shape[-1]
        length = int(rng.integers(32, 65))
        attack = StepTrigger(
            start=int(rng.integers(0, t - length + 1)),
            length=length,
            amplitude=float(rng.uniform(0.3, 0.6)),
            domain=(lo, hi),
        )
    return Poisoning(attack=attack, target=target, poison_rate=rate)


def plan_population(spec: PopulationSpec) -> list[MemberSpec]:
    """The members :func:`make_population` trains, drawn deterministically from ``spec.seed``.

    Per architecture: ``clean_per_arch`` clean members, then ``backdoored_per_arch`` poisoned ones
    cycling through the applicable families. Every member gets its own training seed and a
    learning rate drawn from ``spec.lrs`` by the same rule, clean or not.
    """
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    members: list[MemberSpec] = []
    for arch in spec.archs:
        arch_key = "zoo:" + arch.removeprefix("zoo:")
        train_name, test_name = _data_for(arch_key)
        allowed = SERIES_FAMILIES if _is_series(arch_key) else IMAGE_FAMILIES
        fams = [f for f in (spec.families or allowed) if f in allowed]
        if spec.backdoored_per_arch and not fams:
            raise OptionError(
                "families",
                f"none of {list(spec.families or ())} applies to {arch_key}",
                f"for this architecture use some of {', '.join(allowed)}",
            )
        data = load_data(train_name)
        epochs = spec.epochs or DEFAULT_EPOCHS.get(arch_key, 20)
        short = arch_key.removeprefix("zoo:")
        for i in range(spec.clean_per_arch + spec.backdoored_per_arch):
            seed = int(rng.integers(2**31))
            lr = float(rng.choice(np.asarray(spec.lrs)))
            poisoning = None
            if i >= spec.clean_per_arch:
                j = i - spec.clean_per_arch
                poisoning = _draw_attack(fams[j % len(fams)], rng, data, spec.poison_rate)
            tag = "clean" if poisoning is None else poisoning.family
            members.append(
                MemberSpec(
                    name=f"{spec.name_prefix}{spec.seed}-{short}-{i:03d}-{tag}",
                    arch=arch_key,
                    train_data=train_name,
                    test_data=test_name,
                    seed=seed,
                    epochs=epochs,
                    lr=lr,
                    poisoning=poisoning,
                )
            )
    return members


# --------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class PopulationMember(JsonFields):
    """A trained member: where it is, its clean accuracy, ASR and ground-truth label."""

    spec: MemberSpec = field(metadata={"json": False})
    path: Path = field(metadata={"as": attrgetter("name")})
    clean_accuracy: float
    attack_success_rate: float | None
    label: MemberLabel
    poisoning: Poisoning | None = field(metadata={"json": False})  # the realised poison rate

    json_order = ("name", "path", "arch", "label", "family", "target", "poison_rate", ...)

    @property
    def family(self) -> str:
        return "clean" if self.poisoning is None else self.poisoning.family

    @property
    def target(self) -> int | None:
        return None if self.poisoning is None else self.poisoning.target

    def to_json(self) -> dict[str, Any]:
        # a manifest row: the name and architecture of the spec, the poisoning's rate
        rate = None if self.poisoning is None else self.poisoning.poison_rate
        return fields_json(
            self, extra={"name": self.spec.name, "arch": self.spec.arch, "poison_rate": rate}
        )


@dataclass(frozen=True)
class Population(JsonFields):
    """A trained population and the spec it came from."""

    spec: PopulationSpec
    members: tuple[PopulationMember, ...]
    root: Path = field(metadata={"json": False})

    json_header: ClassVar[Mapping[str, Any]] = {"format": MANIFEST_FORMAT, "version": 1}

    def with_label(self, label: MemberLabel) -> list[PopulationMember]:
        return [m for m in self.members if m.label == label]


def train_member(member: MemberSpec, out_dir: Path, spec: PopulationSpec) -> PopulationMember:
    """Train one member (poisoning its training data if it has an attack) and save it."""
    train = load_data(member.train_data)
    test = load_data(member.test_data)
    poisoning = member.poisoning
    fit_on = train
    if poisoning is not None:
        rng = np.random.default_rng(member.seed)
        fit_on, poisoning, _ = poison_dataset(train, poisoning, rng)
    module = train_model(member.arch, fit_on, epochs=member.epochs, seed=member.seed, lr=member.lr)
    clean_acc = accuracy(module, test)
    asr = None if poisoning is None else attack_success_rate(module, test, poisoning)
    label: MemberLabel = "clean"
    if poisoning is not None:
        label = "backdoored" if asr is not None and asr >= spec.asr_threshold else "attack-failed"
    settings = TrainingSettings(
        epochs=member.epochs,
        seed=member.seed,
        lr=member.lr,
        batch_size=64,
        train_accuracy=accuracy(module, fit_on),
        dataset=fit_on.name,
    )
    backdoor_meta = {
        "label": label,
        "poisoning": None if poisoning is None else poisoning.to_json(),
        "clean_accuracy": clean_acc,
        "attack_success_rate": asr,
        "population_seed": spec.seed,
        "member": member.to_json(),
    }
    path = save_model(
        module,
        out_dir / f"{member.name}.safetensors",
        arch=member.arch,
        spec=spec_from_data(train),
        metadata={"training": settings.to_json(), "backdoor": backdoor_meta},
    )
    return PopulationMember(member, path, clean_acc, asr, label, poisoning)


def _cached_member(member: MemberSpec, out_dir: Path) -> PopulationMember | None:
    """The member as already trained in ``out_dir`` (same spec recorded), else ``None``."""
    path = out_dir / f"{member.name}.safetensors"
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))["backdoor"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if meta.get("member") != json.loads(json.dumps(member.to_json())):
        return None
    poisoning = member.poisoning
    if poisoning is not None and meta.get("poisoning"):
        poisoning = replace(poisoning, poison_rate=float(meta["poisoning"]["poison_rate"]))
    asr = meta.get("attack_success_rate")
    return PopulationMember(
        member,
        path,
        float(meta["clean_accuracy"]),
        None if asr is None else float(asr),
        meta["label"],
        poisoning,
    )


def make_population(
    spec: PopulationSpec,
    out_dir: str | Path,
    *,
    reuse: bool = True,
    progress: Callable[[PopulationMember], None] | None = None,
) -> Population:
    """Train every member of ``spec`` into ``out_dir`` and write ``population.json``.

    Args:
        spec: the population (validated first: a bad spec raises :class:`OptionError` before
            anything is trained).
        out_dir: folder for the models and the manifest (created).
        reuse: keep members already trained there with the same recorded member spec.
        progress: called with each member once it is trained (or found).
    """
    members = plan_population(spec)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    done: list[PopulationMember] = []
    for member in members:
        trained = _cached_member(member, root) if reuse else None
        if trained is None:
            trained = train_member(member, root, spec)
        done.append(trained)
        if progress is not None:
            progress(trained)
    population = Population(spec, tuple(done), root)
    atomic_write_text(root / MANIFEST, json.dumps(population.to_json(), indent=2) + "\n")
    return population


def members_by(
    members: Sequence[PopulationMember], *, arch: str | None = None, family: str | None = None
) -> list[PopulationMember]:
    """Members filtered by architecture and/or family (``"clean"`` for clean models)."""
    return [
        m
        for m in members
        if (arch is None or m.spec.arch == arch) and (family is None or m.family == family)
    ]
