"""`python -m bench [--quick] [--only NAME]`: start the real stack, measure, print, write."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import catalogue, enqueue, queueing, recovery, sse, throughput
from bench.profiling import summarise
from bench.report import Result, load_average, write_markdown
from bench.stack import Stack, raise_open_file_limit, running_stack

BenchFn = Callable[[Stack, bool], Awaitable[Result]]
BENCHES: dict[str, BenchFn] = {
    "enqueue": enqueue.run,
    "sse": sse.run,
    "archive": throughput.run,
    "queue": queueing.run,
    "recovery": recovery.run,
    "catalogue": catalogue.run,
}
ROOT = Path(__file__).resolve().parent.parent

PREAMBLE = """
Each section starts the real processes (`backend.devstack`: redis-server, moto's S3 app
served with keep-alive by `backend.s3standin`, `python -m backend api`, `python -m backend
worker`) on loopback and drives them from the bench process. Figures are percentiles and
ratios taken side by side within the same run: absolute numbers move with whatever else the
machine is doing, the comparisons much less. The bench process (load generator, SSE clients)
runs on the same cores as what it measures.

Rerun with `make bench` (full, writes this file) or `python -m bench --quick` (seconds, what CI
runs to keep the scripts working); `--only NAME` runs one section
(`enqueue`, `sse`, `archive`, `queue`, `recovery`, `catalogue`).
"""


async def main(names: list[str], quick: bool, profile: bool) -> list[Result]:
    results: list[Result] = []
    with running_stack(profile) as stack:
        for name in names:
            started = time.monotonic()
            print(f"\n… {name}", flush=True)
            result = await BENCHES[name](stack, quick)
            print(result.text(), flush=True)
            print(f"({name} took {time.monotonic() - started:.0f} s)", flush=True)
            results.append(result)
        for path in stack.profiler.written:
            print(summarise(path))
    return results


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument(
        "--profile", action="store_true", help="flame graphs (py-spy) into artifacts/bench/"
    )
    parser.add_argument("--only", choices=sorted(BENCHES), action="append", help="run one")
    parser.add_argument(
        "--write",
        type=Path,
        default=None,
        help="markdown report path (default: BENCHMARKS.md after a full run of every section)",
    )
    args = parser.parse_args(argv)
    names = args.only or list(BENCHES)
    raise_open_file_limit()
    try:
        import uvloop

        runner: Callable[..., object] = uvloop.run
    except ImportError:
        runner = asyncio.run
    load_before = load_average()
    results: list[Result] = runner(main(names, args.quick, args.profile))  # type: ignore[assignment]
    state = f"load average (1 / 5 / 15 min) {load_before} before the run, {load_average()} after"
    target = args.write
    if target is None and not args.quick and args.only is None:
        target = ROOT / "BENCHMARKS.md"
    if target is not None:
        command = "python -m bench" + (" --quick" if args.quick else "")
        findings = Path(__file__).with_name("FINDINGS.md")
        write_markdown(target, results, command, PREAMBLE, findings.read_text(), state)
        print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
