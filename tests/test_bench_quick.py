"""The benchmarks keep working: `python -m bench --quick` runs every section end to end.

Figures are not checked (timing asserts on a shared machine would only be noise); what is
checked is that each benchmark started its processes, measured, and printed its table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "1. Enqueue: capacity and cost of a POST",
    "2. SSE scale",
    "3. Archive throughput and worker memory",
    "4. Queue overhead",
    "5. Recovery",
    "6. Catalogue scale",
)


def test_quick_bench_prints_every_table_and_writes_a_report(tmp_path: Path) -> None:
    report = tmp_path / "quick.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--write", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for section in SECTIONS:
        assert f"== {section}" in done.stdout, section
        assert f"## {section}" in report.read_text(), section
    # Every table has its header rule and at least one row under it.
    assert done.stdout.count("\n----") >= len(SECTIONS)
    assert "target" in done.stdout
