"""Write the generated pages of the documentation site into ``docs/generated/`` (not committed).

* one page per built-in check, from its registry entry (``edgeproof.checks.builtin``), its class
  (needs, headline metrics, the settings its constructor takes) and its docstrings (what it
  measures, the source it follows, its settings' meaning);
* one page per command, the ``--help`` of the parser itself;
* the report schema (``edgeproof/report/report.schema.json``) as tables, and the file;
* the examples, each script's source;
* the changelog and the contributing guide.

Run by ``make docs`` before ``mkdocs build --strict``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from edgeproof.checks import check_class
from edgeproof.checks.builtin import BUILTIN_CHECKS
from edgeproof.cli.app import build_parser

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "generated"


def _text(doc: str | None) -> str:
    """A docstring as Markdown: dedented; Sphinx roles (:class:`x`) shown as code."""
    import re

    text = inspect.cleandoc(doc or "")
    text = re.sub(r":(?:class|func|meth|mod|attr|data|exc):`~?([^`]+)`", r"`\1`", text)
    # a reST literal block ("...::" then an indented block) becomes a fenced block
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            out.append(line.rstrip()[:-1] if not line.rstrip().endswith(" ::") else line[:-3])
            j = i + 2
            block: list[str] = []
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith("    ")):
                block.append(lines[j][4:])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```text", *block, "```", ""]
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _settings_table(cls: Any) -> str:
    sig = inspect.signature(cls.__init__)
    rows = []
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = "required" if p.default is p.empty else f"`{p.default!r}`"
        annotation = "" if p.annotation is p.empty else str(p.annotation).replace("|", "\\|")
        rows.append(f"| `{p.name}` | {annotation} | {default} |")
    if not rows:
        return "This check takes no settings."
    return "\n".join(["| setting | type | default |", "|---|---|---|", *rows])


NEEDS = {
    "needs_data": ("labelled data", "no data is given"),
    "needs_forward": ("a forward pass", "the model has weights only (no architecture)"),
    "needs_gradients": ("gradients", "the model is forward-only (ONNX)"),
    "needs_architecture": ("the architecture", "the architecture is unknown"),
}


def check_page(info: Any) -> str:
    cls: Any = check_class(info.name)
    module = inspect.getmodule(cls)
    needs = [(flag, *NEEDS[flag]) for flag in NEEDS if getattr(cls, flag, False)]
    need_text = ", ".join(n[1] for n in needs) or "nothing beyond the model's weights"
    limits = [f"- skipped, with the reason, when {n[2]};" for n in needs]
    headline = ", ".join(f"`{m}`" for m in getattr(cls, "headline", ())) or "—"
    quick = getattr(cls, "quick_settings", {}) or {}
    parts = [
        f"# {info.title} (`{info.name}`)",
        "",
        str(getattr(cls, "description", "") or ""),
        "",
        f"- **needs:** {need_text}",
        f"- **headline metrics:** {headline}",
        f"- **class:** `{info.target.replace(':', '.')}`",
        f"- **runs in parallel threads:** {'yes' if getattr(cls, 'parallel', False) else 'no'}",
        "",
        "## What it measures, and its source",
        "",
        _text(module.__doc__ if module else ""),
        "",
        "## Settings",
        "",
        "Pass them as `get_check(name, **settings)` in Python; the report records them.",
        "",
        _settings_table(cls),
        "",
        _text(cls.__doc__),
        "",
        "## Limits",
        "",
        *limits,
        "- a check that refuses its input (NaN weights, a shape it cannot handle) is recorded as "
        "`error` with a one-line reason; the other checks still run.",
    ]
    if quick:
        parts += [
            f"- the conformance suite runs it with `{dict(quick)!r}` (its quick settings).",
        ]
    return "\n".join(parts) + "\n"


def commands() -> dict[str, str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    pages = {"edgeproof": parser.format_help()}
    for name, p in sub.choices.items():
        pages[name] = p.format_help()
    return pages


def _schema_rows(props: dict[str, Any], required: list[str]) -> list[str]:
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, spec in props.items():
        kind = spec.get("type") or spec.get("$ref", "").split("/")[-1] or "any"
        if isinstance(kind, list):
            kind = " or ".join(kind)
        if spec.get("type") == "array" and "items" in spec:
            item = spec["items"]
            kind = f"array of {item.get('type') or item.get('$ref', '').split('/')[-1]}"
        desc = str(spec.get("description", "")).replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | {kind} | {'yes' if name in required else ''} | {desc} |")
    return rows


def schema_page() -> str:
    raw = resources.files("edgeproof").joinpath("report/report.schema.json").read_text()
    schema = json.loads(raw)
    parts = [
        "# The report schema",
        "",
        f"`report.json` is validated against `edgeproof/report/report.schema.json` "
        f"(shipped in the package; {schema.get('title', '')}). "
        f"{schema.get('description', '')}",
        "",
        "## Top level",
        "",
        *_schema_rows(schema["properties"], schema.get("required", [])),
    ]
    for name, spec in schema.get("$defs", {}).items():
        if "properties" not in spec:
            continue
        parts += ["", f"## `{name}`", "", str(spec.get("description", "")), ""]
        parts += _schema_rows(spec["properties"], spec.get("required", []))
    parts += ["", "## The file", "", "```json", raw.strip(), "```"]
    return "\n".join(parts) + "\n"


def examples_page() -> str:
    parts = [
        "# Examples",
        "",
        "Short scripts in `examples/` for the tasks users come for; each runs in the test suite",
        "(`tests/test_examples.py`) on the built-in digits. Run one with",
        "`python examples/<name>.py --out runs/<name>` (add `--model model.safetensors` to use",
        "your own model instead of the demo's).",
    ]
    for path in sorted((ROOT / "examples").glob("[!_]*.py")):
        doc = (ast_doc(path) or "").splitlines()
        parts += ["", f"## `{path.name}`", "", doc[0] if doc else "", "", "```python"]
        parts += [path.read_text().rstrip(), "```"]
    return "\n".join(parts) + "\n"


def ast_doc(path: Path) -> str | None:
    import ast

    return ast.get_docstring(ast.parse(path.read_text()))


def write(rel: str, text: str, out: Path = OUT) -> None:
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(out: Path = OUT) -> None:
    """Write every generated page into ``out`` (replaced whole)."""
    if out.exists():
        shutil.rmtree(out)
    index = ["# Checks", "", "| check | what it measures | needs |", "|---|---|---|"]
    for info in BUILTIN_CHECKS:
        write(f"checks/{info.name}.md", check_page(info), out)
        cls: Any = check_class(info.name)
        needs = ", ".join(NEEDS[f][0] for f in NEEDS if getattr(cls, f, False)) or "weights"
        index.append(f"| [{info.title}]({info.name}.md) | {cls.description} | {needs} |")
    write("checks/index.md", "\n".join(index) + "\n", out)
    pages = commands()
    cmd_index = ["# Commands", "", "Every command's `--help`; exit codes: 0 ok, 1 a policy or", ""]
    cmd_index[2] = (
        "Every command's `--help`, as the parser prints it. Exit codes: 0 ok; 1 a policy or "
        "a verification failed; 2 bad input; 3 an internal error."
    )
    for name, help_text in pages.items():
        if name == "edgeproof":
            continue
        write(f"commands/{name}.md", f"# `edgeproof {name}`\n\n```text\n{help_text}```\n", out)
        cmd_index.append(f"- [`edgeproof {name}`]({name}.md)")
    cmd_index += ["", "## `edgeproof`", "", "```text", pages["edgeproof"].rstrip(), "```"]
    write("commands/index.md", "\n".join(cmd_index) + "\n", out)
    write("report-schema.md", schema_page(), out)
    write("examples.md", examples_page(), out)
    write("changelog.md", (ROOT / "CHANGELOG.md").read_text(), out)
    write("contributing.md", (ROOT / "CONTRIBUTING.md").read_text(), out)
    print(f"wrote {sum(1 for _ in out.rglob('*.md'))} pages into {out}")


if __name__ == "__main__":
    main()
