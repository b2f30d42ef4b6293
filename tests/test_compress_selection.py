"""Selection under a budget with confidence: the drop's paired upper bound, every class's drop."""

from __future__ import annotations

import pytest

from edgeproof.compress.ledger import Candidate, Ledger, PairedDrop
from edgeproof.compress.search import Budget
from edgeproof.compress.selection import select
from edgeproof.errors import OptionError
from edgeproof.methods.stats import paired_drop_interval, wilson_interval

CLASSES = tuple(str(k) for k in range(10))


def _row(
    name: str,
    size: int,
    *,
    n: int,
    lost: int = 0,
    gained: int = 0,
    drift: tuple[float, ...] = (0.0,) * 10,
    base_acc: float = 0.95,
) -> Candidate:
    acc = base_acc - (lost - gained) / n
    per_class = tuple(base_acc + d for d in drift)
    return Candidate(
        name,
        "t",
        {},
        acc,
        wilson_interval(round(acc * n), n),
        per_class,
        drift,
        size,
        1.0,
        1.0,
        1,
        None,
        drop=PairedDrop(n, lost, gained, paired_drop_interval(lost, gained, n)),
        per_class_records=(n // 10,) * 10,
    )


def _ledger(*rows: Candidate, n: int) -> Ledger:
    return Ledger(_row("fp32", 100_000, n=n), list(rows), classes=CLASSES)


def test_a_drop_within_the_budget_whose_paired_upper_bound_is_not_is_refused() -> None:
    # The case: 284 records, 3 lost and 2 gained, 0.35 points against a 1 % budget.
    int8 = _row("int8", 26_000, n=284, lost=3, gained=2)
    assert int8.drop is not None and int8.drop.value < 0.01 < int8.drop.interval.high
    sel = select(_ledger(int8, n=284), 0.01, None)
    assert sel.chosen.name == "fp32"
    refusal = sel.refusal("int8")
    assert refusal is not None and refusal.reasons == ("drop_bound",)
    assert sel.records_needed is not None and sel.records_needed > 284
    assert sel.message.startswith(
        "no compressed candidate can be shown to meet the budget on these 284 evaluation records"
    )
    assert f"about {sel.records_needed:,} evaluation records" in sel.message
    assert "int8, drop 0.35% [" in sel.message


def test_the_same_rates_on_enough_records_meet_the_budget() -> None:
    need = select(_ledger(_row("int8", 26_000, n=284, lost=3, gained=2), n=284), 0.01, None)
    assert need.records_needed is not None
    n = need.records_needed
    lost, gained = round(3 * n / 284), round(2 * n / 284)
    sel = select(_ledger(_row("int8", 26_000, n=n, lost=lost, gained=gained), n=n), 0.01, None)
    assert sel.met_budget and sel.chosen.name == "int8" and not sel.refusals
    assert sel.message.startswith("int8 meets the budget (drop 0.34% [")
    assert f"on {n:,} records" in sel.message


def test_a_point_drop_over_the_budget_is_refused_as_such_with_no_record_count() -> None:
    sel = select(_ledger(_row("w4", 15_000, n=300, lost=6, gained=2), n=300), 0.01, None)
    refusal = sel.refusal("w4")
    assert refusal is not None and refusal.reasons == ("drop",)
    assert refusal.records_needed is None and sel.records_needed is None
    assert "drop 1.33% [" in refusal.message and "is over the 1.00% budget" in refusal.message


def test_a_candidate_hiding_one_class_drop_behind_the_average_is_not_chosen() -> None:
    drift = (0.0,) * 9 + (-0.0556,)
    w4 = _row("w4g32", 15_000, n=4000, lost=11, drift=drift)  # 0.28 points overall
    int8 = _row("int8", 26_000, n=4000, lost=8)
    sel = select(
        _ledger(w4, int8, n=4000), 0.01, None, max_class_drop=Budget(0.01).class_drop_limit
    )
    assert sel.met_budget and sel.chosen.name == "int8"
    refusal = sel.refusal("w4g32")
    assert refusal is not None and refusal.reasons == ("class_drop",)
    assert refusal.message.startswith("class 9 drops 5.56% (accuracy 0.950 -> 0.894 on 400")
    assert "over the per-class limit of 3.00%, behind an overall drop of 0.28%" in refusal.message
    assert "smaller candidates not chosen: w4g32 (class 9 drops 5.56%" in sel.message
    # without a per-class limit the average hides it
    assert select(_ledger(w4, int8, n=4000), 0.01, None).chosen.name == "w4g32"


def test_the_ledger_table_marks_the_chosen_row_and_why_the_others_were_not() -> None:
    drift = (0.0,) * 9 + (-0.08,)
    ledger = _ledger(
        _row("w4g32", 15_000, n=4000, lost=11, drift=drift),
        _row("int8", 26_000, n=4000, lost=8),
        n=4000,
    )
    sel = select(ledger, 0.01, None, max_class_drop=0.03)
    table = ledger.table(sel.verdicts(ledger.rows), notes=False)
    assert table.columns[:5] == ["candidate", "verdict", "drop", "drop_ci_low", "drop_ci_high"]
    assert "notes" not in table.columns
    verdicts = {r[0]: r[1] for r in table.rows}
    assert verdicts == {"fp32": "meets budget", "w4g32": "over: class drop", "int8": "chosen"}
    assert "exact paired 95% interval" in table.description


def test_the_default_per_class_limit_is_three_times_the_budget_or_five_points() -> None:
    assert Budget(max_drop=0.01).class_drop_limit == pytest.approx(0.03)
    assert Budget().class_drop_limit == pytest.approx(0.05)
    assert Budget(max_drop=0.01, max_class_drop=0.02).class_drop_limit == 0.02
    with pytest.raises(OptionError, match=r"max_class_drop: 2\.0 is not in \[0, 1\]"):
        Budget(max_class_drop=2.0)
