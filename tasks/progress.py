"""The one progress bar of long loops (pretraining, training): steps, loss, time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def loss_bar(label: str, enabled: bool = True) -> Progress:
    """A rich bar whose tasks carry a `loss` field (a preformatted string)."""
    return Progress(
        TextColumn(f"[bold blue]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(),
        disable=not enabled,
    )
