"""Benchmark: adaptive issuance pacing against a real scepserver (not a test: it prints figures).

    .venv/bin/python bench/pacing_bench.py

The long version of tests/e2e/test_adaptive_pacing.py (MDMSCEP_PACING_LONG=1): the stack as
processes, 100 simulated Macs with 10 SCEP profiles each, and a real scepserver behind a relay that
issues one certificate at a time in at least 70 ms. It measures the CA's own rate straight from
scepclients (and the scepserver's without the relay), then prints, every 2 s for a minute, the
rate the processor learned from the CA's answers (the stats API), the certificates the CA issued
and the deliveries waiting; then how long the processor took to halve the rate once the CA was
made slow, then failing. Its printout is what the report shows.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         "tests/e2e/test_adaptive_pacing.py"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env={**os.environ, "MDMSCEP_PACING_LONG": "1"}, check=False)
    # The test's own lines: from its first to pytest's verdict, without pytest's progress dots.
    lines = done.stdout.splitlines()
    first = next((i for i, line in enumerate(lines) if "straight from" in line), 0)
    for line in lines[first:]:
        if re.match(r"=+ |\d+ (passed|failed)", line):
            break
        if (line and not line.strip(".F")) or line.startswith("WARNING "):
            continue  # pytest's progress, the hosts' logging
        print(line)
    if done.returncode != 0:  # pytest's account of the failure, without the hosts' logging
        print("\n".join(line for line in lines if line.startswith(("E ", "FAILED", "tests/"))))
    print("passed" if done.returncode == 0 else f"pytest exited with {done.returncode}")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
