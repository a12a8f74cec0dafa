"""One progress bar for long work outside Lightning's loops (collection, downloads, sweeps).

Rich's bar on a terminal; silent when ``quiet``. ``advance(n)`` moves it; byte bars show size and speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(total: int | None, description: str, quiet: bool = False,
             unit: str = "steps") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; ``unit="bytes"`` adds size and transfer-speed columns.

    On a clean exit the bar is completed to ``total``; on an exception it stops where it was.
    """
    if quiet:
        yield lambda n: None
        return
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    columns = [*Progress.get_default_columns()]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn()]
    bar = Progress(*columns, transient=False)
    bar.start()
    task_id = bar.add_task(description, total=total)
    try:
        yield lambda n: bar.advance(task_id, n)
        if total is not None:
            bar.update(task_id, completed=total)
    finally:
        bar.stop()
