"""Mutation testing (mutmut 3) of the modules whose bugs would be silent: the losses, the methods, the splits, the
distributed helpers, zoo.load and the export. Each mutant (an operator, constant or call changed) is run against
the tests that cover the mutated function; a mutant the tests do not notice *survives*.

    pip install mutmut && python bench/mutation.py          # all of them (long: run it on a quiet machine)
    python bench/mutation.py 'zoo.losses*' 'zoo.methods*'    # the mutants of some modules (fnmatch patterns)
    python bench/mutation.py --results                       # the last run's score per module and survivors

Configuration: ``[tool.mutmut]`` in pyproject.toml (which modules, which tests) and bench/mutmut_plugin.py. Not
part of CI.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def results() -> tuple[dict[str, Counter], list[str]]:
    """(count per status for each module, surviving mutant names) from ``mutmut results --all true``."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    by_module: dict[str, Counter] = {}
    survivors = []
    for line in out.splitlines():
        match = re.match(r"\s*(\S+)\.x\S*: (\w[\w ]*)$", line)
        if match:
            module, status = match.groups()
            by_module.setdefault(module, Counter())[status] += 1
            if status == "survived":
                survivors.append(line.strip().rsplit(":", 1)[0])
    return by_module, survivors


def score_row(name: str, statuses: Counter) -> str:
    killed = statuses["killed"] + statuses["timeout"]
    tested = killed + statuses["survived"]
    score = f"{killed / tested:.1%}" if tested else "-"
    return f"| {name} | {tested} | {killed} | {statuses['survived']} | {score} | {statuses['no tests']} |"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", action="store_true", help="only report the last run")
    parser.add_argument(
        "patterns", nargs="*", help="mutant names or fnmatch patterns (default: every mutant)"
    )
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
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *args.patterns],
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # see bench/mutmut_plugin.py
        )
    by_module, survivors = results()
    print("| module | mutants tested | killed | survived | score | not reached by the selected tests |")
    print("|---|---|---|---|---|---|")
    for module, statuses in sorted(by_module.items()):
        print(score_row(module, statuses))
    print(score_row("all", sum(by_module.values(), Counter())))
    for name in survivors:
        print("survived:", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
