"""Optional sampling profiles of the measured processes (`--profile`).

py-spy attaches to a running process from outside, so the process runs unmodified. Samples
are written as collapsed stacks (artifacts/bench/<name>.txt, the input of any flame graph
tool) and summarised as the functions that hold the most samples.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from backend import devstack

OUTPUT = Path(__file__).resolve().parent.parent / "artifacts" / "bench"


class Profiler:
    """Records flame graphs when enabled; a no-op otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.written: list[Path] = []

    @contextlib.contextmanager
    def record(self, process: devstack.Process, name: str) -> Iterator[None]:
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not self.enabled or not Path(binary).exists():
            yield
            return
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{name}.txt"
        spy = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(process.popen.pid),
                "--rate",
                "250",
                "--output",
                str(path),
                "--format",
                "raw",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield
        finally:
            # SIGINT makes py-spy stop sampling and write what it has.
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
            if path.exists():
                self.written.append(path)


def summarise(path: Path, top: int = 15, own_code: str = "backend/") -> str:
    """The frames with the most samples: overall (inclusive) and in our own code."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames[1:]):
            inclusive[frame] += count
            if own_code in frame:
                own[frame] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples; frames in {own_code} by inclusive share:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)
