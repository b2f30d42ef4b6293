"""``torch.export`` programs (``.pt2``), read without running anything from the file.

``torch.export.load`` is not safe on an untrusted file. In torch 2.13
(``torch/export/pt2_archive/_package.py``, ``torch/_export/serde/serialize.py``) it

* unpickles weights and constants saved with ``use_pickle`` with ``torch.load(weights_only=False)``;
* loads the sample inputs (and legacy weight files) with ``weights_only=True`` and, when that
  fails, *falls back* to ``weights_only=False`` — a full unpickle of attacker bytes;
* unpickles ``custom_obj_*`` constants with ``torch._C._pickle_load_obj`` and ``opaque_obj_*`` with
  ``pickle.loads``;
* ``dlopen``\\ s the AOTInductor shared libraries under ``data/aotinductor/``;
* evaluates every symbolic-shape string (``expr_str``) with ``sympy.sympify`` (Python ``eval``);
* ``exec``\\ s the program's ``guards_code`` when building ``.module()``;
* imports any module a pytree spec names (``defaultdict`` factories, ``__enum__`` hooks);
* resolves each graph node's target by name under ``torch`` — ``torch.ops.aten.from_file``,
  ``torch.save`` and friends included — and calls it on every forward.

:func:`load_export` therefore re-implements the reading with :mod:`zipfile` and safe pieces, and
only then hands the parsed parts to torch's deserializer (``ExportedProgramDeserializer``), which
receives tensors and dicts, never bytes it could unpickle:

1. ``archive_format`` must say ``pt2``; AOTInductor, ExecuTorch and MTIA payloads are refused.
2. The program JSON is read within the document limits. Every node target anywhere in it
   (nested graphs too) must be on the operator allowlist (:mod:`.ops`); every ``expr_str`` must be
   arithmetic over symbols, numbers and the symbolic-shape functions (checked with :mod:`ast`);
   pytree specs may only name tuples, lists, dicts, ``OrderedDict``, named tuples and torch's
   immutable collections; ``guards_code`` must be empty and there may be no custom objects.
3. Weights and constants: raw payloads become tensors from their bytes after their declared
   dtype, size, stride and offset are checked against the payload's length and the size limits;
   pickled payloads are read with ``torch.load(weights_only=True)`` (PyTorch's restricted
   unpickler) and must be tensors; custom and opaque objects are refused.
4. Sample inputs are read with ``torch.load(weights_only=True)``, with no fallback.

Anything refused raises :class:`~edgeproof.errors.UnsafeCodeError` (``UnsafePickleError`` for
pickles) naming the piece; ``trust_code=True`` calls ``torch.export.load`` instead.
"""

from __future__ import annotations

import ast
import io
import logging
import math
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from edgeproof import limits
from edgeproof.errors import ModelFileError, UnsafeCodeError, UnsafePickleError, param
from edgeproof.models.formats.ops import is_allowed, names_of, op_name
from edgeproof.structured import parse_json
from edgeproof.zipfiles import ZipArchive

__all__ = ["check_program_json", "check_sym_expr", "load_export"]

_FIX = (
    f"pass {param('trust_code', switch=True)} only if you trust the file, or re-export the model "
    "as .safetensors or .onnx"
)
_CORRUPT = "the file is truncated or corrupt, or not written by torch.export.save; re-export it"
_REFUSED_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
_PYTREE_TYPES = frozenset(
    {
        None,
        "builtins.tuple",
        "builtins.list",
        "builtins.dict",
        "collections.OrderedDict",
        "collections.namedtuple",
        "torch.fx.immutable_collections.immutable_list",
        "torch.fx.immutable_collections.immutable_dict",
    }
)
_SYMPY_FUNCTIONS = names_of(
    """
    FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift
    RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator
    TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat Identity
    Symbol Integer Rational Float Add Mul Pow Max Min Abs Eq Ne Lt Le Gt Ge Equality Unequality
    StrictLessThan LessThan StrictGreaterThan GreaterThan And Or Not Piecewise ExprCondPair
    floor ceiling BooleanTrue BooleanFalse
    """
)
"""What ``srepr`` writes for symbolic shapes: torch's sympy functions and sympy's own."""
_SYM_NAMES = names_of("oo zoo nan true false S One Zero NegativeOne Half Infinity")
_SYM_KEYWORDS = names_of(
    """positive negative nonnegative nonpositive integer real finite infinite zero nonzero
    commutative rational even odd precision"""
)
_POWERS = frozenset({"PowByNatural", "FloatPow", "LShift", "RShift", "Pow"})
_SYMBOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_FLOAT_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SYM_OPS = (
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd, ast.Not,
    ast.Invert, ast.BitAnd, ast.BitOr, ast.BitXor, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt,
    ast.LtE, ast.Gt, ast.GtE, ast.Load, ast.Pow, ast.LShift, ast.RShift, ast.keyword,
)  # fmt: skip
_MAX_CONSTANT = 2**63
_MAX_EXPONENT = 64
_MAX_EXPR_CHARS = 4096


def load_export(path: Path, *, trust_code: bool) -> torch.nn.Module:
    """The ``torch.export`` program in ``path`` as a runnable module (``program.module()``).

    Raises:
        UnsafeCodeError: a piece of the archive would run code (not trusted).
        ModelFileError: the archive cannot be read.
    """
    with _quiet_export_logs():
        if trust_code:
            try:
                return torch.export.load(str(path)).module()
            except Exception as exc:  # torch raises RuntimeError/KeyError/zip errors
                raise ModelFileError(
                    path, f"not a loadable torch.export program ({_short(exc)})", _CORRUPT
                ) from None
        program = _safe_program(path)
        try:
            result: torch.nn.Module = program.module()
            return result
        except Exception as exc:  # building the module from a malformed program
            raise ModelFileError(
                path, f"not a loadable torch.export program ({_short(exc)})", _CORRUPT
            ) from None


@contextmanager
def _quiet_export_logs() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)  # torch logs a traceback before it raises; we convert
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ------------------------------------------------------------------------------------ archive


def _safe_program(path: Path) -> Any:
    try:
        from torch._export.serde import schema
        from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass
    except ImportError:  # a torch without the 2.x serde layout
        raise UnsafeCodeError(
            path,
            f"this torch ({torch.__version__}) has no torch.export reader edgeproof can use "
            "without unpickling",
            _FIX,
        ) from None
    with ZipArchive(path, ModelFileError, what="torch.export archive") as zf:
        names = zf.names()
        prefix = _prefix(path, names)
        members = {n[len(prefix) :]: n for n in names if n.startswith(prefix)}
        if len(set(names)) != len(names):
            raise ModelFileError(path, "has duplicate archive members", _CORRUPT)
        fmt = members.get("archive_format")
        if fmt is None or zf.read_text(fmt).strip() != "pt2":
            raise ModelFileError(
                path,
                "is not a torch.export archive (no archive_format 'pt2'; archives from torch "
                "before 2.6 are not read without trust_code)",
                _CORRUPT,
            )
        for rel in members:
            if rel.startswith(_REFUSED_DIRS):
                raise UnsafeCodeError(
                    path,
                    f"holds compiled code ({rel}): AOTInductor/ExecuTorch payloads are native "
                    "libraries that would be loaded and run",
                    _FIX,
                )
        models = sorted(
            rel[len("models/") : -len(".json")]
            for rel in members
            if rel.startswith("models/") and rel.endswith(".json")
        )
        if "model" not in models:
            raise ModelFileError(path, "has no program models/model.json", _CORRUPT)
        text = zf.read_text(members["models/model.json"])
        obj = parse_json(text, path, error=ModelFileError, what="program JSON (models/model.json)")
        refused = check_program_json(obj)
        if refused:
            shown = "; ".join(refused[:3])
            more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
            raise UnsafeCodeError(
                path,
                f"the exported program holds {shown}{more}, outside what edgeproof runs without "
                "trust",
                _FIX,
            )
        state_dict = _payloads(zf, members, path, "model", "weights")
        constants = _payloads(zf, members, path, "model", "constants")
        example_inputs = _sample_inputs(zf, members, path, "model")
    try:
        serialized = _dict_to_dataclass(schema.ExportedProgram, obj)
        return ExportedProgramDeserializer(None).deserialize(
            serialized, state_dict, constants, example_inputs
        )
    except (UnsafeCodeError, ModelFileError):
        raise
    except Exception as exc:  # SerializeError, AssertionError, KeyError from a malformed program
        raise ModelFileError(
            path, f"not a loadable torch.export program ({_short(exc)})", _CORRUPT
        ) from None


def _prefix(path: Path, names: list[str]) -> str:
    """The archive's top folder (``lenet/``), found from its ``archive_format`` member."""
    for n in names:
        if n.endswith("archive_format") and n.count("/") <= 1:
            return n[: -len("archive_format")]
    raise ModelFileError(path, "is not a torch.export archive (no archive_format)", _CORRUPT)


# ------------------------------------------------------------------------------- program JSON


def check_program_json(obj: Any) -> list[str]:
    """What in a serialized ``ExportedProgram`` (parsed JSON) would run code; ``[]`` if nothing.

    Walks the whole document iteratively: node targets, symbolic expressions, pytree specs,
    guard code and custom objects (see the module docstring).
    """
    refused: list[str] = []
    if not isinstance(obj, dict):
        return ["a program that is not a JSON object"]
    if obj.get("guards_code"):
        refused.append("guard code (Python source torch would exec)")
    stack: list[Any] = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        target = node.get("target")
        if isinstance(target, str) and "inputs" in node and not is_allowed(target):
            refused.append(f"a call to {_target_name(target)}")
        expr = node.get("expr_str")
        if isinstance(expr, str):
            problem = check_sym_expr(expr)
            if problem:
                refused.append(f"the symbolic expression {expr[:60]!r} ({problem})")
        for key in ("in_spec", "out_spec"):
            spec = node.get(key)
            if isinstance(spec, str):
                problem = _check_treespec(spec)
                if problem:
                    refused.append(f"a pytree spec {problem}")
        for key in ("custom_obj_values", "as_custom_obj"):
            if node.get(key):
                refused.append("a custom (torchbind) object")
        stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return list(dict.fromkeys(refused))


def _target_name(target: str) -> str:
    name = op_name(target)
    return name if "::" in name else target


def check_sym_expr(expr: str) -> str:
    """Why ``expr`` is not plain symbolic-shape arithmetic, or ``""`` if it is.

    ``expr_str`` is ``sympy.srepr`` output, e.g. ``Mul(Integer(2), Symbol('s0', positive=True,
    integer=True))``, which torch hands to ``sympy.sympify`` (``eval``). Allowed: calls of
    torch's symbolic-shape functions and of the sympy classes ``srepr`` writes, with constant
    arguments (numbers up to 2**63; strings only as a ``Symbol`` name or ``Float`` digits;
    keywords only sympy's assumptions and ``precision``), arithmetic, comparison and boolean
    operators, and names that are not Python builtins. Powers and shifts only by a symbol or a
    constant up to 64 (a constant tower such as ``2**(10**10)`` would never finish).
    """
    import builtins

    if len(expr) > _MAX_EXPR_CHARS:
        return f"longer than {_MAX_EXPR_CHARS} characters"
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "not an arithmetic expression"
    strings_ok: set[int] = set()
    for node in ast.walk(tree):
        shift = (ast.Pow, ast.LShift, ast.RShift)
        is_power = isinstance(node, ast.BinOp) and isinstance(node.op, shift)
        if is_power and not _small_exponent(node.right):  # type: ignore[attr-defined]
            return "a power by a large constant"
        if isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare)):
            continue
        if isinstance(node, _SYM_OPS):
            if isinstance(node, ast.keyword) and node.arg not in _SYM_KEYWORDS:
                return f"the keyword {node.arg!r}"
            continue
        if isinstance(node, ast.Name):
            if node.id.startswith("_") or (
                hasattr(builtins, node.id) and node.id not in _SYM_NAMES
            ):
                return f"the name {node.id!r}"
            continue
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                continue
            if isinstance(value, str):
                if id(node) not in strings_ok:
                    return "a string outside Symbol()/Float()"
                continue
            if not isinstance(value, (int, float)) or not (
                math.isfinite(value) and abs(value) <= _MAX_CONSTANT
            ):
                return f"the constant {value!r}"
            continue
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_FUNCTIONS:
                return "a call of something that is not a symbolic-shape function"
            fname = node.func.id
            if node.args and isinstance(node.args[0], ast.Constant):
                first = node.args[0].value
                if isinstance(first, str):
                    pattern = _SYMBOL_NAME if fname == "Symbol" else _FLOAT_TEXT
                    if fname not in ("Symbol", "Float") or not pattern.fullmatch(first):
                        return f"the string {first[:40]!r}"
                    strings_ok.add(id(node.args[0]))
            if fname in _POWERS and (len(node.args) != 2 or not _small_exponent(node.args[1])):
                return "a power by a large constant"
            continue
        return f"a {type(node).__name__} expression"
    return ""


def _small_exponent(node: ast.expr) -> bool:
    """A symbol, or an integer constant in [-64, 64] (also as ``Integer(k)``)."""
    if isinstance(node, ast.Name):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _small_exponent(node.operand)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id == "Symbol":
            return True
        if node.func.id == "Integer" and len(node.args) == 1:
            return _small_exponent(node.args[0])
        return False
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
        and -_MAX_EXPONENT <= node.value <= _MAX_EXPONENT
    )


def _check_treespec(text: str) -> str:
    try:
        obj = parse_json(text, "<spec>", error=ModelFileError, what="pytree spec")
    except ModelFileError as exc:
        return f"that is not readable ({exc.problem})"
    stack: list[Any] = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "type" in node and node["type"] not in _PYTREE_TYPES:
                return f"naming the type {str(node['type'])[:60]!r}"
            context = node.get("context")
            if isinstance(context, str) and ("__enum__" in context or "default_factory" in context):
                return "whose context imports a module"
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return ""


# ----------------------------------------------------------------------------------- payloads


def _payloads(
    zf: ZipArchive, members: dict[str, str], path: Path, model: str, kind: str
) -> dict[str, torch.Tensor]:
    """The weights or constants of one model, as tensors, without unpickling objects."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import _dict_to_dataclass

    base = f"data/{kind}/"
    legacy = f"{base}{model}.pt"
    if legacy in members:
        obj = _weights_only(zf.read(members[legacy]), path, legacy)
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UnsafePickleError(path, f"{legacy} holds objects other than tensors", _FIX)
        return obj
    config_name = f"{base}{model}_{kind}_config.json"
    if config_name not in members:
        raise ModelFileError(path, f"has no {config_name}", _CORRUPT)
    config_obj = parse_json(
        zf.read_text(members[config_name]), path, error=ModelFileError, what=config_name
    )
    try:
        config = _dict_to_dataclass(schema.PayloadConfig, config_obj)
        entries = list(config.config.items())
    except Exception as exc:  # malformed config: AssertionError/KeyError/TypeError
        raise ModelFileError(
            path, f"{config_name} is malformed ({_short(exc)})", _CORRUPT
        ) from None
    storages: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for fqn, meta in entries:
        name = str(getattr(meta, "path_name", ""))
        where = f"{base}{name}"
        if kind == "constants" and name.startswith(("custom_obj_", "opaque_obj_")):
            raise UnsafePickleError(
                path,
                f"constant {fqn!r} ({where}) is a pickled Python/TorchBind object; loading it "
                "would run code from the file",
                _FIX,
            )
        if where not in members:
            raise ModelFileError(path, f"{fqn!r}: payload {where} is missing", _CORRUPT)
        if getattr(meta, "use_pickle", False):
            tensor = _weights_only(zf.read(members[where]), path, where)
            if not isinstance(tensor, torch.Tensor):
                raise UnsafePickleError(
                    path, f"{where} holds a {type(tensor).__name__}, not a tensor", _FIX
                )
        else:
            tensor = _raw_tensor(zf, members[where], meta, storages, path, where)
        if getattr(meta, "is_param", False) and kind == "weights":
            tensor = torch.nn.Parameter(tensor, requires_grad=_requires_grad(meta))
        out[str(fqn)] = tensor
    return out


def _requires_grad(meta: Any) -> bool:
    tm = getattr(meta, "tensor_meta", None)
    return bool(getattr(tm, "requires_grad", False)) if tm is not None else False


def _raw_tensor(
    zf: ZipArchive,
    member: str,
    meta: Any,
    storages: dict[str, torch.Tensor],
    path: Path,
    where: str,
) -> torch.Tensor:
    from torch._export.serde.serialize import (
        deserialize_scalar_type,
        deserialize_size,
        deserialize_storage_offset,
        deserialize_stride,
    )

    tm: Any = getattr(meta, "tensor_meta", None)
    try:
        dtype = deserialize_scalar_type(tm.dtype)
        size = tuple(int(s) for s in deserialize_size(tm.sizes))
        stride = tuple(int(s) for s in deserialize_stride(tm.strides))
        offset = int(deserialize_storage_offset(tm.storage_offset))
    except Exception as exc:  # missing/ill-typed tensor_meta fields
        raise ModelFileError(path, f"{where}: malformed tensor metadata ({_short(exc)})") from None
    item = torch.empty((), dtype=dtype).element_size()
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise ModelFileError(path, f"{where}: size {size} and stride {stride} do not fit")
    numel = math.prod(size)
    limits.check(ModelFileError, path, "max_array_bytes", f"tensor {where}", numel * item)
    nbytes = zf.size(member)
    if nbytes == 0:
        return torch.zeros(size, dtype=dtype)
    if nbytes % item:
        raise ModelFileError(
            path, f"{where} holds {nbytes} bytes, not a whole number of {dtype} elements"
        )
    needed = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1 if numel else 0
    if needed * item > nbytes or offset < 0:
        raise ModelFileError(
            path,
            f"{where} declares a {dtype} tensor of size {list(size)} needing {needed * item} "
            f"bytes but holds {nbytes}",
            _CORRUPT,
        )
    storage = storages.get(member)
    if storage is None:
        data = bytearray(zf.read(member))
        storage = torch.frombuffer(data, dtype=torch.uint8).view(dtype) if data else torch.empty(0)
        storages[member] = storage
    return torch.as_strided(storage, size, stride, offset)


def _weights_only(data: bytes, path: Path, where: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise UnsafePickleError(
                path,
                f"{where} holds pickled Python objects, not only tensors; loading it would run "
                "code from the file",
                _FIX,
            ) from None
        raise ModelFileError(
            path, f"{where} is not a readable tensor file ({_short(exc)})"
        ) from None
    except Exception as exc:  # RuntimeError/EOFError/zip errors from torch.load
        raise ModelFileError(
            path, f"{where} is not a readable tensor file ({_short(exc)})"
        ) from None


def _sample_inputs(zf: ZipArchive, members: dict[str, str], path: Path, model: str) -> Any:
    where = f"data/sample_inputs/{model}.pt"
    if where not in members:
        return None
    data = zf.read(members[where])
    if not data:
        return None
    obj = _weights_only(data, path, where)
    if not isinstance(obj, (tuple, dict)):
        raise ModelFileError(path, f"{where} holds a {type(obj).__name__}, not inputs", _CORRUPT)
    return obj


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."
