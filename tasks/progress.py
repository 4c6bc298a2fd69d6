"""The one progress bar of long loops (pretraining, training, HF generation): steps, loss, time
left; and, when the output is not a terminal, its plain lines.

A rich bar cannot redraw in a file: a run whose output goes to a log would show nothing of a
20-minute stage until it ended. So where the console is not a terminal, the bar also prints
one line per update that is due (`LineThrottle`): at most one per `EVERY_S` seconds and per
`EVERY_SHARE` of the work, whichever is rarer, plus the last step. A stage of any length
writes at most 1 / `EVERY_SHARE` + 1 lines, and a short one only its last.
`FLYWHEEL_PROGRESS_EVERY_S` changes the seconds.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from tqdm import tqdm

EVERY_S = 10.0
EVERY_SHARE = 0.05
EVERY_S_VAR = "FLYWHEEL_PROGRESS_EVERY_S"
"""Sets the seconds between lines (`EVERY_S` when unset): 60 for a quieter log, 0 for a line
per `EVERY_SHARE` of the work."""


def every_s() -> float:
    """The seconds between plain lines: `FLYWHEEL_PROGRESS_EVERY_S`, else `EVERY_S`."""
    value = os.environ.get(EVERY_S_VAR, "").strip()
    try:
        return max(0.0, float(value)) if value else EVERY_S
    except ValueError:
        raise ValueError(f"{EVERY_S_VAR}={value!r}: expected a number of seconds") from None


class LineThrottle:
    """Whether step `done` of `total` at time `now` gets a plain line: both `every_s` seconds
    and `every_share` of the work since the last line (only the time when `total` is unknown),
    and always the step that completes the work, once."""

    def __init__(
        self,
        total: float | None,
        start: float,
        every_s: float = EVERY_S,
        every_share: float = EVERY_SHARE,
    ) -> None:
        self.total, self.every_s = total, every_s
        self.every_steps = every_share * total if total else 0.0
        self.last_time, self.last_done = start, 0.0
        self.finished = False

    def due(self, done: float, now: float) -> bool:
        if self.finished:
            return False
        if self.total and done >= self.total:
            self.finished = True
        elif now - self.last_time < self.every_s or done - self.last_done < self.every_steps:
            return False
        self.last_time, self.last_done = now, done
        return True


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(
    description: str,
    done: float,
    total: float | None,
    fields: dict[str, Any],
    elapsed: float | None,
    remaining: float | None,
) -> str:
    """`pretraining: 120/600 (20 %) loss 2.345, 0:01:10 elapsed, 0:04:40 left`."""
    count = f"{done:g}/{total:g} ({100 * done / total:.0f} %)" if total else f"{done:g}"
    shown = "".join(f" {k} {v}" for k, v in fields.items() if v not in (None, "", "-"))
    return f"{description}: {count}{shown}, {_clock(elapsed)} elapsed, {_clock(remaining)} left"


class LoggedProgress(Progress):
    """A rich `Progress` that, on a console that is not a terminal, also prints its tasks'
    updates as throttled plain lines (see the module's docstring)."""

    def __init__(self, *columns: str | ProgressColumn, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self._throttles: dict[TaskID, LineThrottle] = {}
        self._every_s = every_s()

    @property
    def _plain(self) -> bool:
        return not self.disable and not self.console.is_terminal

    def update(self, task_id: TaskID, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._line(task_id)

    def _line(self, task_id: TaskID) -> None:
        if not self._plain:
            return
        task = self._tasks[task_id]
        throttle = self._throttles.get(task_id)
        if throttle is None:
            throttle = LineThrottle(task.total, self.get_time(), self._every_s)
            self._throttles[task_id] = throttle
        if throttle.due(task.completed, self.get_time()):
            self.console.print(
                progress_line(
                    task.description,
                    task.completed,
                    task.total,
                    task.fields,
                    task.elapsed,
                    task.time_remaining,
                ),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )


def task_bar(enabled: bool = True, get_time: Any = None) -> LoggedProgress:
    """rich's default bar (description, bar, percentage, time left) with plain lines in logs."""
    return LoggedProgress(
        *Progress.get_default_columns(),
        console=Console(),
        disable=not enabled,
        **({"get_time": get_time} if get_time else {}),
    )


def loss_bar(label: str, enabled: bool = True, get_time: Any = None) -> LoggedProgress:
    """A bar whose tasks carry a `loss` field (a preformatted string)."""
    return LoggedProgress(
        TextColumn(f"[bold blue]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(),
        disable=not enabled,
        **({"get_time": get_time} if get_time else {}),
    )


class LineTqdm(tqdm):
    """tqdm for a log (vLLM's bar): a plain line when `LineThrottle` says one is due, in place
    of tqdm's carriage-return redraws, which a file keeps as one ever-growing line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("file", sys.stdout)
        kwargs.pop("dynamic_ncols", None)  # no terminal to measure
        kwargs["leave"] = False  # its closing redraw would add an empty line or a \r
        self._throttle: LineThrottle | None = None
        super().__init__(*args, **kwargs)
        self._throttle = LineThrottle(self.total, self._time(), every_s())

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Print the bar as one line when due (the closing call too: its empty `msg` asks for
        a clear, which a log does not need); False, so `close` writes no \r after it."""
        if self._throttle is not None and self._throttle.due(self.n, self._time()):
            self.fp.write(f"{self}\n")
            self.fp.flush()
        return False


def tqdm_bar(enabled: bool) -> bool | type[tqdm]:
    """What to pass as vLLM's `use_tqdm`: its own bar on a terminal, `LineTqdm` in a log."""
    if not enabled:
        return False
    return True if Console().is_terminal else LineTqdm
