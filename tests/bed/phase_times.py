#!/usr/bin/env python3
"""Time the actions of a Molecule run.

  molecule test -s S 2>&1 | phase_times.py record OUT.json      pass the output through, time each action
  phase_times.py report DIR                                     a table of every OUT.json in DIR

Molecule prints "INFO [scenario > action] Executing" when an action starts;
an action lasts until the next one starts or the output ends.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

START = re.compile(r"^INFO\s+\[(?P<scenario>[\w-]+) > (?P<action>[\w-]+)\] Executing\s*$")
SHOWN = ("create", "prepare", "check", "converge", "idempotence", "side_effect", "verify", "destroy")


def record(out: Path, stream=sys.stdin, sink=sys.stdout) -> None:
    phases: list[list] = []
    started = time.monotonic()
    current = None
    for line in stream:
        sink.write(line)
        sink.flush()
        match = START.match(line.strip())
        if match:
            now = time.monotonic()
            if current:
                current[1] = round(now - current[1], 1)
                phases.append(current)
            current = [match["action"], now]
    if current:
        current[1] = round(time.monotonic() - current[1], 1)
        phases.append(current)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"total": round(time.monotonic() - started, 1), "phases": phases}))


def report(directory: Path) -> str:
    rows = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        sums: dict[str, float] = {}
        for action, seconds in data["phases"]:
            sums[action] = sums.get(action, 0.0) + seconds
        rows.append([path.stem] + [f"{sums[a]:.0f}" if a in sums else "-" for a in SHOWN] + [f"{data['total']:.0f}"])
    if not rows:
        return ""
    header = ["scenario", *SHOWN, "total"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    return "Molecule actions (seconds; idempotence counts both runs where a scenario has two):\n" + "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "record":
        record(Path(argv[2]))
        return 0
    if len(argv) == 3 and argv[1] == "report":
        print(report(Path(argv[2])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
