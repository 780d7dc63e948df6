"""The long fuzzing run of docs/reliability.md: tests/test_fuzz_inputs.py's properties on many fresh inputs.

Run from the repository root, on one core::

    .venv/bin/python bench/fuzz.py --examples 2000                  # every property
    .venv/bin/python bench/fuzz.py --examples 20000 -k "journal or decoded"

CI runs each property of tests/test_fuzz_inputs.py on a small sample that is the same on every
run. This runs the same properties, one after the other, on ``--examples`` new random inputs
each (``MER_FUZZ_EXAMPLES``; hypothesis draws a new seed every run), and prints each property's
seconds and outcome. A failure is a finding: hypothesis prints the smallest input it reduced it
to, and a ``@reproduce_failure`` line that replays it. The exit status is 1 when any property failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROPERTIES = REPO / "tests" / "test_fuzz_inputs.py"


class Outcomes:
    """A pytest plugin that keeps each test's outcome and the seconds its call took."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report) -> None:
        row = self.rows.setdefault(report.nodeid.split("::")[-1], {"outcome": "passed", "seconds": 0.0})
        row["seconds"] += report.duration
        if report.failed:
            row["outcome"] = f"FAILED ({report.when})"
        elif report.skipped:
            row["outcome"] = "skipped"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="valid inputs per property (default 2000)")
    parser.add_argument("-k", dest="select", default="", help="pytest -k expression choosing properties")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error("--examples must be 1 or more")

    os.environ["MER_FUZZ_EXAMPLES"] = str(args.examples)  # read when pytest imports the test module
    import pytest

    outcomes = Outcomes()
    started = time.perf_counter()
    # timeout=0: the suite's 300 s per-test limit is for CI samples, not for this run.
    pytest_args = [str(PROPERTIES), "-q", "-p", "no:cacheprovider", "-o", "timeout=0", "--tb=short",
                   "--hypothesis-show-statistics"]
    code = pytest.main([*pytest_args, "-k", args.select] if args.select else pytest_args, plugins=[outcomes])
    total = time.perf_counter() - started

    print(f"\nfuzzing with {args.examples} examples per property ({PROPERTIES.relative_to(REPO)}):")
    for name, row in outcomes.rows.items():
        print(f"  {row['seconds']:8.1f} s  {row['outcome']:<18} {name}")
    print(f"  {total:8.1f} s  in all (pytest exit status {int(code)})")
    if args.json:
        args.json.write_text(json.dumps({"examples": args.examples, "seconds": round(total, 1),
                                         "properties": outcomes.rows}, indent=2))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
