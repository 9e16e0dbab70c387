"""Mutation testing (mutmut 3) of the modules whose bugs would be silent: the losses, the methods, the splits, the
distributed helpers, zoo.load and the export. Each mutant (an operator, constant or call changed) is run against
the tests that cover the mutated function; a mutant the tests do not notice *survives*.

    pip install mutmut && python bench/mutation.py          # all of them (long: run it on a quiet machine)
    python bench/mutation.py --results                       # the last run's score and survivors

Configuration: ``[tool.mutmut]`` in pyproject.toml (which modules, which tests). Not part of CI.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def results() -> tuple[Counter, list[str]]:
    """(count per status, surviving mutant names) from ``mutmut results --all true``."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    statuses, survivors = Counter(), []
    for line in out.splitlines():
        match = re.match(r"\s*(\S+): (\w[\w ]*)$", line)
        if match:
            statuses[match.group(2)] += 1
            if match.group(2) == "survived":
                survivors.append(match.group(1))
    return statuses, survivors


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", action="store_true", help="only report the last run")
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args()
    if (
        shutil.which("mutmut") is None
        and subprocess.run([sys.executable, "-m", "mutmut", "--help"], capture_output=True).returncode
    ):
        print("mutmut is not installed: pip install mutmut", file=sys.stderr)
        return 2
    if not args.results:
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)], cwd=ROOT
        )
    statuses, survivors = results()
    killed = statuses["killed"] + statuses["timeout"]
    tested = killed + statuses["survived"]
    print(dict(statuses))
    if tested:
        print(
            f"mutation score: {killed}/{tested} = {killed / tested:.1%} killed (no tests: {statuses['no tests']})"
        )
    for name in survivors:
        print("survived:", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
