"""TorchScript archives: a static allowlist check of their code before ``torch.jit.load``.

A TorchScript archive is a program. ``torch.jit.load`` compiles the archive's ``code/`` source
and then unpickles ``data.pkl``, which calls every scripted ``__setstate__`` *while loading*;
``forward`` runs later, on every input. Either can call an operator that writes files
(``torch.from_file(path, shared=True)`` creates and writes ``path``; a ``.pth`` file in
site-packages or a shell rc file written that way is code execution). So before
``torch.jit.load`` sees the file, :func:`inspect_archive` reads it without running anything:

1. **Code.** Every ``code/**.py`` file is parsed with :mod:`ast` (TorchScript's serialized source
   is Python syntax). Every operator it can reach is listed: ``torch.NAME`` is ``aten::NAME``;
   ``ops.NS.NAME`` and ``torch.ops.NS.NAME`` are ``NS::NAME``; ``x.NAME(...)`` is a method of a
   class defined in the archive (checked with the class) or else the builtin ``aten::NAME``
   (tensor, list, string and dict methods); ``getattr(x, "NAME")`` is ``x.NAME``; a bare call
   must be a local function value or one of TorchScript's pure builtins (``int``, ``len``,
   ``range``, ``annotate`` …; not ``print``). ``__torch__.torch.classes.*`` (torchbind classes:
   C++ code) and ``import`` statements are refused outright. This covers every method of every
   class, ``__setstate__`` included.
2. **Pickles.** ``data.pkl``, ``constants.pkl`` and the ``.debug_pkl`` files are run through a
   recording unpickler (:func:`~edgeproof.models.formats.pickles.pickle_globals`) that imports
   nothing; every global must be a tensor rebuild function, a storage type, ``OrderedDict``,
   a ``torch.jit._pickle`` helper, or a class defined in the archive's own code.
3. Every operator must be on :mod:`~edgeproof.models.formats.ops`' allowlist.

Anything refused raises :class:`~edgeproof.errors.UnsafeCodeError` naming the operator and the
file it is in, unless ``trust_code=True``. After loading, the compiled graphs of every method
are checked against the same allowlist (``torch._C._jit_pass_inline`` on a copy), as a second
line of defence that does not depend on the source reading.
"""

from __future__ import annotations

import ast
import functools
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgeproof import limits
from edgeproof.errors import ModelFileError, UnsafeCodeError, param
from edgeproof.models.formats.ops import is_allowed, names_of, op_name
from edgeproof.models.formats.pickles import PickleUnreadable, pickle_globals
from edgeproof.zipfiles import ZipArchive

__all__ = [
    "ArchiveInspection",
    "check_loaded",
    "inspect_archive",
    "load_torchscript",
]

_FIX = (
    f"pass {param('trust_code', switch=True)} only if you trust the file, or re-export the model "
    "as .safetensors or .onnx"
)

_BUILTINS = names_of(
    """
    int float bool str complex len range annotate unchecked_cast uninitialized isinstance
    getattr hasattr min max abs round divmod enumerate zip list tuple dict sorted any all
    sum ord chr hex oct bin pow reversed iter next hash id super
    """
)
"""Bare-name calls TorchScript resolves to pure builtins (``print`` is not among them)."""

_TORCH_TYPES = names_of(
    """
    Tensor device dtype Size Generator layout memory_format qscheme Stream Event float16
    float32 float64 bfloat16 half float double int8 int16 int32 int64 uint8 bool complex64
    complex128 long short cfloat cdouble strided contiguous_format channels_last
    preserve_format inf nan pi e
    """
)
"""``torch.NAME`` references that are types or constants, not operators."""

_PICKLE_GLOBALS = names_of(
    """
    torch._utils._rebuild_tensor torch._utils._rebuild_tensor_v2
    torch._utils._rebuild_tensor_v3 torch._utils._rebuild_parameter
    torch._utils._rebuild_parameter_with_state torch._utils._rebuild_qtensor
    collections.OrderedDict torch.device torch.Size torch.jit._pickle.build_intlist
    torch.jit._pickle.build_doublelist torch.jit._pickle.build_boollist
    torch.jit._pickle.build_tensorlist torch.jit._pickle.build_tensor_from_id
    torch.jit._pickle.restore_type_tag torch.storage.UntypedStorage
    """
)
_STORAGE_TYPES = frozenset(
    f"torch.{n}Storage"
    for n in names_of(
        "Float Double Half BFloat16 Long Int Short Char Byte Bool ComplexFloat ComplexDouble "
        "QInt8 QUInt8 QInt32 QUInt4x2 QUInt2x4 Untyped"
    )
)


@dataclass(frozen=True)
class ArchiveInspection:
    """What the static check found in a TorchScript archive.

    Attributes:
        ops: every operator the code can call (``ns::name``).
        refused: ``(what, where)`` for each operator, global or construct outside the allowlist.
        globals: every global the archive's pickles name.
        classes: the classes defined in the archive's code (qualified ``__torch__.…`` names).
    """

    ops: frozenset[str]
    refused: tuple[tuple[str, str], ...]
    globals: frozenset[str] = field(default_factory=frozenset)
    classes: frozenset[str] = field(default_factory=frozenset)

    @property
    def safe(self) -> bool:
        return not self.refused


def load_torchscript(path: Path, *, trust_code: bool) -> torch.jit.ScriptModule:
    """``torch.jit.load`` after :func:`inspect_archive` found nothing outside the allowlist.

    Raises:
        UnsafeCodeError: the archive calls an operator outside the allowlist (not trusted).
        ModelFileError: the archive cannot be read or compiled.
    """
    source: str | io.BytesIO = str(path)
    if not trust_code:
        members: dict[str, bytes] = {}
        found = inspect_archive(path, members)
        _refuse(path, found.refused)
        source = _repacked(members)  # torch reads exactly the bytes that were checked
    try:
        module = torch.jit.load(source, map_location="cpu")
    except Exception as exc:  # torch.jit raises RuntimeError (and others) for bad archives
        raise ModelFileError(
            path,
            f"not a loadable TorchScript archive ({_short(exc)})",
            "the file is truncated or corrupt; re-save it with torch.jit.save",
        ) from None
    if not trust_code:
        _refuse(path, check_loaded(module))
    result: torch.jit.ScriptModule = module
    return result


def _refuse(path: Path, refused: Iterable[tuple[str, str]]) -> None:
    items = list(dict.fromkeys(refused))
    if not items:
        return
    shown = "; ".join(f"{what} in {where}" for what, where in items[:3])
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    raise UnsafeCodeError(
        path,
        f"the TorchScript archive uses {shown}{more}, outside edgeproof's allowlist of pure "
        "tensor operators; loading or running it could touch files, processes or the network",
        _FIX,
    )


# ------------------------------------------------------------------------------------ archive


def inspect_archive(path: Path, members: dict[str, bytes] | None = None) -> ArchiveInspection:
    """Read a TorchScript archive's code and pickles without running any of it.

    Args:
        path: the archive.
        members: if given, filled with every member's bytes (sizes checked against the
            limits), so the caller can hand torch exactly what was checked.

    Raises:
        ModelFileError: the file is not a readable zip archive, has duplicate members, or is
            over the size limits.
    """
    code: dict[str, str] = {}
    pickles: dict[str, bytes] = {}
    refused: list[tuple[str, str]] = []
    total = 0
    with ZipArchive(path, ModelFileError, what="TorchScript archive") as zf:
        names = zf.names()
        if len(set(names)) != len(names):
            raise ModelFileError(path, "has duplicate archive members", "re-save it")
        for name in names:
            parts = name.split("/")
            if name.endswith(".py") and "code" in parts[:-1]:
                data = zf.read(name, limit="max_document_bytes")
                try:
                    code[name] = data.decode("utf-8")
                except UnicodeDecodeError:
                    refused.append(("code that is not UTF-8 text", name))
            elif name.endswith((".pkl", ".debug_pkl")):
                data = zf.read(name, limit="max_document_bytes")
                pickles[name] = data
            elif members is not None:
                data = zf.read(name)
            else:
                continue
            if members is not None:
                total += len(data)
                limits.check(ModelFileError, path, "max_model_bytes", "the archive", total)
                members[name] = data
    if not code and not pickles:
        raise ModelFileError(
            path,
            "is a zip archive without TorchScript code or pickles",
            "give a file written by torch.jit.save",
        )
    modules = {_module_of(name): src for name, src in code.items()}
    trees: dict[str, ast.Module] = {}
    for qual, src in modules.items():
        try:
            trees[qual] = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            refused.append(("code that cannot be checked statically", _file_of(qual)))
    classes, methods, functions = _definitions(trees)
    ops: set[str] = set()
    for qual, tree in trees.items():
        walker = _CodeWalker(qual, methods, functions | classes)
        try:
            walker.visit(tree)
        except RecursionError:
            refused.append(("code nested too deeply to check", _file_of(qual)))
            continue
        ops |= walker.ops
        refused.extend((what, _file_of(qual)) for what in walker.refused)
    found_globals: set[str] = set()
    for name, data in pickles.items():
        try:
            pickled = pickle_globals(data)
        except PickleUnreadable as exc:
            refused.append((f"a pickle that cannot be checked ({exc})", name))
            continue
        found_globals |= pickled
        for g in sorted(pickled):
            if not _pickle_global_allowed(g, classes):
                refused.append((f"pickled global {g}", name))
    return ArchiveInspection(
        frozenset(ops), tuple(refused), frozenset(found_globals), frozenset(classes)
    )


def _repacked(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
        for name, data in members.items():
            out.writestr(name, data)
    buf.seek(0)
    return buf


def _module_of(member: str) -> str:
    """``root/code/__torch__/a/b.py`` → ``__torch__.a.b``."""
    parts = member.split("/")
    rel = parts[parts.index("code") + 1 :]
    rel[-1] = rel[-1].removesuffix(".py")
    return ".".join(rel)


def _file_of(qual: str) -> str:
    return "code/" + qual.replace(".", "/") + ".py"


def _definitions(trees: dict[str, ast.Module]) -> tuple[set[str], set[str], set[str]]:
    """Qualified class names, all method names, and qualified top-level function names."""
    classes: set[str] = set()
    methods: set[str] = set()
    functions: set[str] = set()
    for qual, tree in trees.items():
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes.add(f"{qual}.{node.name}")
                methods.update(
                    n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                )
            elif isinstance(node, ast.FunctionDef):
                functions.add(f"{qual}.{node.name}")
    return classes, methods, functions


def _pickle_global_allowed(name: str, classes: set[str]) -> bool:
    if name in _PICKLE_GLOBALS or name in _STORAGE_TYPES:
        return True
    if name.startswith("__torch__.torch.classes."):
        return False
    return name.startswith("__torch__.") and name in classes


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attributes on a name (``getattr(a, "b")`` counts), else None."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            parts.append(node.args[1].value)
            node = node.args[0]
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        else:
            return None


class _CodeWalker(ast.NodeVisitor):
    """Collects the operators one code module reaches, and the constructs refused."""

    def __init__(self, module: str, methods: set[str], defined: set[str]) -> None:
        self.module = module
        self.methods = methods
        self.defined = defined
        self.ops: set[str] = set()
        self.refused: list[str] = []
        self.local_names: list[set[str]] = [set()]

    # scopes: parameters and assigned names may hold function values (``_0 = __torch__.f``)
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        names = {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}
        if node.args.vararg:
            names.add(node.args.vararg.arg)
        if node.args.kwarg:
            names.add(node.args.kwarg.arg)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                names.add(sub.id)
        self.local_names.append(names)
        for stmt in node.body:
            self.visit(stmt)
        for deco in node.decorator_list:
            self.visit(deco)
        self.local_names.pop()
        for arg in (*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs):
            if arg.annotation is not None:
                self.visit(arg.annotation)
        if node.returns is not None:
            self.visit(node.returns)

    def visit_Import(self, node: ast.Import) -> None:
        self.refused.append("an import statement")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.refused.append("an import statement")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = _dotted(node)
        if dotted is None:
            self.generic_visit(node)
            return
        self._reference(dotted, called=False)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        args: list[ast.expr] = list(node.args)
        if isinstance(func, ast.Name) and func.id == "getattr" and _dotted(node) is not None:
            self._reference(str(_dotted(node)), called=False)  # getattr(a, "b") is a.b
            args = args[2:]
        elif isinstance(func, ast.Name):
            self._bare_call(func.id)
        elif _dotted(func) is not None:
            self._reference(str(_dotted(func)), called=True)
        else:
            self.visit(func)
            if isinstance(func, ast.Attribute):
                self._method(func.attr)
        for arg in args:
            self.visit(arg)
        for kw in node.keywords:
            self.visit(kw.value)

    def _bare_call(self, name: str) -> None:
        if name in _BUILTINS or any(name in scope for scope in self.local_names):
            return
        if f"{self.module}.{name}" in self.defined:
            return
        if name == "print":
            self._op("prim::Print")
            return
        self.refused.append(f"the unknown function {name}()")

    def _reference(self, dotted: str, *, called: bool) -> None:
        parts = dotted.split(".")
        head = parts[0]
        if head == "torch" and len(parts) >= 2:
            if parts[1] == "ops" and len(parts) >= 4:
                self._op(f"{parts[2]}::{parts[3]}")
            elif parts[1] == "classes":
                self.refused.append(f"the torchbind class {dotted}")
            elif not (parts[1] in _TORCH_TYPES and not called):
                self._op(f"aten::{parts[1]}")
            return
        if head == "ops" and len(parts) >= 3:
            self._op(f"{parts[1]}::{parts[2]}")
            return
        if head == "math" and len(parts) >= 2:
            self._op(f"aten::{parts[1]}")
            return
        if head == "__torch__":
            if dotted.startswith("__torch__.torch.classes."):
                self.refused.append(f"the torchbind class {dotted}")
            return
        if head == "CONSTANTS":
            return
        # attribute chain on a local value: the last part is a method when called
        if called and len(parts) >= 2:
            self._method(parts[-1])

    def _method(self, name: str) -> None:
        """``x.name(...)``: a method of an archive class, or a builtin ``aten::`` method."""
        target = f"aten::{name}"
        if name in self.methods and not (_registered(target) and not is_allowed(target)):
            return
        self._op(target)

    def _op(self, name: str) -> None:
        self.ops.add(name)
        if not is_allowed(name):
            self.refused.append(f"operator {name}")


@functools.lru_cache(maxsize=4096)
def _registered(op: str) -> bool:
    return bool(torch._C._jit_get_schemas_for_operator(op))


# ------------------------------------------------------------------------------ loaded module


def check_loaded(module: torch.jit.ScriptModule) -> list[tuple[str, str]]:
    """``(operator, method)`` for every compiled node outside the allowlist, in every method."""
    refused: list[tuple[str, str]] = []
    seen: set[int] = set()
    for sub in module.modules():
        c = getattr(sub, "_c", None)
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        try:
            names = c._method_names()
        except (AttributeError, RuntimeError):
            continue
        for name in names:
            try:
                graph = c._get_method(name).graph.copy()
                torch._C._jit_pass_inline(graph)
            except RuntimeError:
                continue
            for kind in _node_kinds(graph.nodes()):
                if not is_allowed(kind):
                    refused.append((f"operator {op_name(kind)}", f"method {name}"))
    return refused


def _node_kinds(nodes: Iterable[torch._C.Node]) -> Iterable[str]:
    stack = list(nodes)
    while stack:
        node = stack.pop()
        yield node.kind()
        for block in node.blocks():
            stack.extend(block.nodes())


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."
