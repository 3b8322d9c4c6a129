"""What a run shows while it works: a live bar on a terminal, periodic plain lines in a log (stdout or stderr
redirected to a file, a CI job, ``nohup``), so a long run is never silent.

Both take the executor's progress calls ``(phase, shards done, shards total, input records read)``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

#: seconds between two plain progress lines when the output is not a terminal (ASSAY_PROGRESS_SECONDS overrides)
DEFAULT_INTERVAL = 30.0


class BarProgress:
    """One rich progress bar per phase (terminal)."""

    def __init__(self, console: Console) -> None:
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("shards · {task.fields[records]:,} records read"), TimeElapsedColumn(),
                             console=console, transient=False)
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "BarProgress":
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def __call__(self, label: str, done: int, total: int, records: int) -> None:
        if label not in self._tasks:
            self._tasks[label] = self._bar.add_task(escape(label), total=total, records=records)
        self._bar.update(self._tasks[label], completed=done, records=records)


class LineProgress:
    """Plain lines (no control characters): one when a phase starts, every ``interval`` seconds while it runs
    (also while a single long job runs in this process), and one when it ends."""

    def __init__(self, console: Console, interval: float = DEFAULT_INTERVAL,
                 records: Callable[[], int] | None = None) -> None:
        self.console = console
        self.interval = interval
        self.records = records  # reads the live count between executor calls (e.g. during one long job)
        self._state: tuple[str, int, int, int] | None = None
        self._printed: tuple[str, int, int, int] | None = None
        self._t0 = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="assay-progress", daemon=True)

    def __enter__(self) -> "LineProgress":
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._ticker.join()

    def __call__(self, label: str, done: int, total: int, records: int) -> None:
        with self._lock:
            new_phase = self._state is None or self._state[0] != label
            self._state = (label, done, total, records)
            if new_phase or done == total or time.monotonic() - self._last >= self.interval:
                self._print()

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            with self._lock:
                if self._state is not None and time.monotonic() - self._last >= self.interval:
                    if self.records is not None:
                        label, done, total, _ = self._state
                        self._state = (label, done, total, self.records())
                    self._print(force=True)

    def _print(self, force: bool = False) -> None:
        assert self._state is not None
        if self._state == self._printed and not force:
            return
        label, done, total, records = self._state
        elapsed = int(time.monotonic() - self._t0)
        self.console.print(f"{label}: {done}/{total} shards · {records:,} records read · "
                           f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}",
                           markup=False, highlight=False, soft_wrap=True)
        self._printed = self._state
        self._last = time.monotonic()


def progress_display(console: Console, interval: float = DEFAULT_INTERVAL,
                     records: Callable[[], int] | None = None) -> BarProgress | LineProgress:
    """A live bar on a terminal, periodic lines otherwise."""
    if console.is_terminal:
        return BarProgress(console)
    return LineProgress(console, interval, records)
