"""A one-line progress bar on a terminal, plain occasional lines when not a terminal."""

from __future__ import annotations

import time
from collections import deque
from typing import TextIO

# Speed is measured over this many recent seconds, so a stall shows quickly.
SPEED_WINDOW = 5.0
TTY_REDRAW_EVERY = 0.1
# Logs and CI get a line per 10 % step, per state change, or at least this often.
PLAIN_EVERY = 10.0


def format_iec_size(count: float) -> str:
    """`1.5 KiB` style: IEC units with one decimal, steady in a redrawn progress line."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Rate:
    """Bytes per second over the last SPEED_WINDOW seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, done: int, now: float) -> None:
        if self._samples and done < self._samples[-1][1]:
            self._samples.clear()  # restarted from zero
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW:
            self._samples.popleft()

    def per_second(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None


class ProgressBar:
    """Renders `label [####----]  42%  3/8 files  12.0/40.0 MiB  2.0 MiB/s  ETA 0:13`.

    On a terminal the line is redrawn in place; elsewhere a full line is written now and then,
    so logs stay readable. Disabled bars write nothing.
    """

    def __init__(self, stream: TextIO, label: str, enabled: bool = True, width: int = 24) -> None:
        self.stream = stream
        self.label = label
        self.enabled = enabled
        self.width = width
        self.tty = enabled and stream.isatty()
        self.rate = Rate()
        self._last_draw = 0.0
        self._last_plain: tuple[int, str] | None = None
        self._drawn = False
        self._clock = "local"

    def update(
        self,
        done: int,
        total: int | None,
        percent: int | None = None,
        files: tuple[int, int] | None = None,
        note: str = "",
        at: float | None = None,
    ) -> None:
        """Show `done` of `total` bytes; `at` is when that was true, if not now."""
        if not self.enabled:
            return
        now = time.monotonic()
        clock = "local" if at is None else "server"
        if clock != self._clock:  # the two clocks' samples do not mix
            self.rate, self._clock = Rate(), clock
        self.rate.add(done, time.time() if at is None else at)
        if percent is None:
            percent = min(100, done * 100 // total) if total else 0
        line = self._render(done, total, percent, files, note)
        if self.tty:
            if now - self._last_draw >= TTY_REDRAW_EVERY or percent == 100:
                self.stream.write("\r" + line + "\x1b[K")
                self.stream.flush()
                self._last_draw, self._drawn = now, True
        else:
            step = (percent // 10, note)
            if step != self._last_plain or now - self._last_draw >= PLAIN_EVERY:
                self.stream.write(line + "\n")
                self.stream.flush()
                self._last_plain, self._last_draw = step, now

    def message(self, text: str) -> None:
        """A line of its own (a retry, a reconnect) that leaves the bar below it."""
        if not self.enabled:
            return
        self.stream.write(("\r\x1b[K" if self._drawn else "") + text + "\n")
        self.stream.flush()
        self._last_draw = 0.0

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _render(
        self,
        done: int,
        total: int | None,
        percent: int,
        files: tuple[int, int] | None,
        note: str,
    ) -> str:
        filled = self.width * percent // 100
        parts = [f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {percent:3d}%"]
        if files is not None:
            parts.append(f"{files[0]}/{files[1]} files")
        parts.append(
            f"{format_iec_size(done)}/{format_iec_size(total)}" if total else format_iec_size(done)
        )
        speed = self.rate.per_second()
        if speed:
            parts.append(f"{format_iec_size(speed)}/s")
            if total and done < total:
                parts.append(f"ETA {human_duration((total - done) / speed)}")
        if note:
            parts.append(note)
        return "  ".join(parts)
