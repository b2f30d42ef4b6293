"""Gate CI with a policy: audit, apply TOML thresholds, exit 1 when one fails.

The same as ``edgeproof audit MODEL --data DATA --policy policy.toml``; a rule whose metric is
missing (its check was skipped or failed) fails too, so a gate cannot pass because a check did
not run.

    python examples/ci_gate.py --out runs/gate
"""

from __future__ import annotations

import sys

from _common import parser, trained_model

from edgeproof import audit, get_check, load_data, load_policy
from edgeproof.report.files import write_report

POLICY = """\
[thresholds]
"performance.accuracy" = ">= 0.90"
"performance.min_class_recall" = ">= 0.80"
"calibration.ece" = "<= 0.08"
"""


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--policy", help="a policy TOML file (default: the one above, written to --out)")
    args = p.parse_args(argv)
    model = trained_model(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    policy_path = args.policy or (args.out / "policy.toml")
    if args.policy is None:
        policy_path.write_text(POLICY)
    policy = load_policy(policy_path)

    data = load_data("builtin:digits")
    checks = [get_check("performance"), get_check("calibration", resamples=50)]
    report = audit(model, data, checks, seed=0)
    outcome = policy.apply(report)
    report.policy = outcome
    write_report(report, args.out)
    for rule in outcome.rules:
        print(rule.message)
    print("gate:", "passed" if outcome.passed else "FAILED")
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
