"""Progress bars on a terminal, silent elsewhere and under --json."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(total: int, description: str, quiet: bool = False, unit: str = "epoch") -> tqdm:
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=quiet or not sys.stderr.isatty(),
        dynamic_ncols=True,
        leave=False,
    )
