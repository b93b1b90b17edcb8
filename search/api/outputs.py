"""Where a command's figures go: the formats it writes, the folder it may write to, and a figure written
after a long run, when a PNG that cannot be made must not fail what is already stored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from search.errors import UsageError
from search.results.export import FORMATS, PNG_HINT, check_output_folder, output_folder, safe_file_name, write_plots
from search.results.plots import Plot, Skipped

__all__ = ["FORMATS", "PNG_HINT", "check_output_folder", "default_folder", "write_figure"]


def default_folder(name: str) -> str:
    """exports/NAME, the name made safe as a folder name."""
    return f"exports/{safe_file_name(name)}"


def write_figure(plot: Plot | Skipped, out: str, formats: Sequence[str]) -> tuple[list[Path], str | None]:
    """The plot's CSV and HTML, then its PNG where a browser renders it: the files written (none for a
    skipped plot), and why no PNG was made (None when it was, or not asked for). The study is stored by
    now, so a PNG that cannot be made is a note for the caller, not a failure."""
    if not isinstance(plot, Plot):
        return [], None
    problem = None
    with output_folder(out) as folder:
        written, _ = write_plots([plot], folder, [f for f in formats if f != "png"])
        if "png" in formats:
            try:
                rendered, png = write_plots([plot], folder, ["png"])
                written += [path for path in rendered if path.suffix == ".png"]
                if not png:
                    problem = PNG_HINT
            except UsageError as error:
                problem = str(error)
    return sorted(set(written)), problem
