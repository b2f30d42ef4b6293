"""Assemble docs/benchmarks.md from the per-topic sections in docs/benchmarks/*.md.

Each benchmark script writes its own section (docs/benchmarks/<topic>.md) from one run; this script
only concatenates them, in a fixed order, under a common header.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["demo", "spectral", "attacks", "square", "certify", "compress", "compress_mixed", "seal"]


def main() -> None:
    sections = ROOT / "docs" / "benchmarks"
    files = sorted(
        sections.glob("*.md"),
        key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem),
    )
    parts = [
        "# Benchmarks\n",
        "Written by the scripts in `benchmarks/` (`make bench`); each section comes from one run "
        "of its script on the machine it names. Timings are medians over repeats; comparisons "
        "with peers are ratios measured in the same run. These machines are shared and noisy: "
        "read ratios, not absolute times.\n",
    ]
    parts += [p.read_text(encoding="utf-8").strip() + "\n" for p in files]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote docs/benchmarks.md from {len(files)} section(s)")


if __name__ == "__main__":
    main()
