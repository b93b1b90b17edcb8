"""Progress bars on a terminal and in a notebook; silent elsewhere (logs, pipes) and when asked to be quiet."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def in_notebook() -> bool:
    """True inside a Jupyter kernel, whose stderr is no terminal but shows a bar (a widget, or text)."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"


def progress(total: int, description: str, quiet: bool = False, unit: str = "epoch") -> tqdm:
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=quiet or not (sys.stderr.isatty() or in_notebook()),
        dynamic_ncols=True,
        leave=False,
    )
