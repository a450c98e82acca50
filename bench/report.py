"""Figures and tables: percentiles, the result of one benchmark, and BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a real sample)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return "–" if seconds != seconds else f"{seconds * 1000:.1f}"


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f}"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"row of {len(cells)} cells for {len(self.headers)} columns")
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |"]
        lines.append("|" + "|".join(" ---: " for _ in self.headers) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def text(self) -> str:
        widths = [
            max(len(self.headers[i]), *(len(row[i]) for row in self.rows))
            for i in range(len(self.headers))
        ]
        rule = "  ".join("-" * w for w in widths)
        out = ["  ".join(h.rjust(w) for h, w in zip(self.headers, widths, strict=True)), rule]
        out += [
            "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in self.rows
        ]
        return "\n".join(out)


@dataclass
class Result:
    """What one benchmark found: tables, target verdicts and the notes a reader needs."""

    name: str
    title: str
    tables: list[tuple[str, Table]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def target(self, what: str, figure: str, goal: str, met: bool) -> None:
        self.targets.append(f"{what}: {figure} (target {goal}) — {'met' if met else 'MISSED'}")

    def text(self) -> str:
        out = [f"== {self.title} =="]
        for caption, table in self.tables:
            out += ["", caption, table.text()]
        if self.targets:
            out += ["", *(f"* {t}" for t in self.targets)]
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        for caption, table in self.tables:
            out += [f"{caption}", "", table.markdown(), ""]
        if self.targets:
            out += [*(f"- {t}" for t in self.targets), ""]
        out += [*self.notes]
        return "\n".join(out).rstrip() + "\n"


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory = int(meminfo.read_text().split()[1]) * 1024
    return (
        f"{os.cpu_count()} CPU cores ({model}), {memory / 2**30:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages (runnable processes, `uptime`'s)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def write_markdown(
    path: Path,
    results: list[Result],
    command: str,
    preamble: str,
    appendix: str = "",
    state: str = "",
) -> None:
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# Benchmarks",
        "",
        f"Measured {today} on {machine()}, with `{command}`.",
        *([f"Machine state: {state}."] if state else []),
        "",
        preamble.strip(),
        "",
    ]
    body = "\n".join(r.markdown() for r in results)
    path.write_text("\n".join(head) + "\n" + body + ("\n" + appendix if appendix else ""))
