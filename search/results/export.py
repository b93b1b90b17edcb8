"""Writing figures to a folder: self-contained HTML, PNG through kaleido, and the CSV behind each.

Files are staged in a hidden folder inside the target and moved in at the end, so a failure
leaves no half-written export behind.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import kaleido
from kaleido.errors import ChromeNotFoundError

from search.errors import UsageError, argument, worded
from search.files import write_bytes_atomically
from search.results.plots import Plot

FORMATS = ("html", "png")
PNG_WIDTH = 1100
PNG_HEIGHT = 650
PNG_HINT = (
    "PNG files not written: kaleido needs Chrome or Chromium and found none; install one "
    "(on Debian: apt-get install chromium; with internet: run plotly_get_chrome, which fetches one for kaleido) "
    "or point BROWSER_PATH at it, then export again"
)


def safe_file_name(name: str) -> str:
    """A study name made into one file or folder name: no separators, no `..`, no control characters.

    Names that had to change get a short hash of the original, so two studies never share a folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")[:80] or "study"
    if safe == name:
        return safe
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{safe}-{digest}"


def check_output_folder(out: str | Path) -> None:
    """Refuse an output folder that cannot be written, without creating anything: for commands that
    write their figures only after a long run, which must not fail at the end on a bad --out."""
    path = Path(out)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write to {argument('out')} folder {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {argument('out')} folder {path}: permission denied on {existing}")


@contextlib.contextmanager
def output_folder(out: str | Path) -> Iterator[Path]:
    """The output folder, created if needed, and removed again if it was new and the writing fails."""
    path = Path(out)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UsageError(f"cannot write to {argument('out')} folder {path}: {error.strerror}") from None
    try:
        yield path
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def write_plots(plots: Sequence[Plot], out: Path, formats: Sequence[str]) -> tuple[list[Path], bool]:
    """Write each plot's CSV and the asked formats; returns the files and whether PNG was possible."""
    return write_plot_folders({"": plots}, out, formats)


def write_plot_folders(
    folders: Mapping[str, Sequence[Plot]], out: Path, formats: Sequence[str]
) -> tuple[list[Path], bool]:
    """`write_plots` for plots in subfolders of `out` (each key a subfolder, "" `out` itself), all staged
    together, so a failure in the last folder leaves none of them written."""
    try:
        return _write_staged(folders, out, formats)
    except OSError as error:  # a full disk, say: the staging folder is gone again, nothing half-written stays
        raise UsageError(f"cannot write to {out}: {error.strerror or error}") from None


def _write_staged(folders: Mapping[str, Sequence[Plot]], out: Path, formats: Sequence[str]) -> tuple[list[Path], bool]:
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as folder:
        stage = Path(folder)
        placed = [(plot, stage / sub) for sub, plots in folders.items() for plot in plots]
        for plot, place in placed:
            place.mkdir(exist_ok=True)
            write_csv(place / f"{plot.name}.csv", plot.rows)
            if "html" in formats:
                plot.figure.write_html(place / f"{plot.name}.html", include_plotlyjs=True, config={"responsive": True})
        png = "png" in formats and _write_pngs(placed)
        if "png" in formats and not png and "html" not in formats:
            raise UsageError(PNG_HINT.replace("PNG files not written: ", "cannot write PNG: "))
        written = []
        for staged in sorted(path for path in stage.rglob("*") if path.is_file()):
            target = out / staged.relative_to(stage)
            target.parent.mkdir(exist_ok=True)
            os.replace(staged, target)
            written.append(target)
    return written, png


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomically(path, text.getvalue().encode())


def write_text(path: Path, text: str) -> None:
    """Replace `path` in one step, so a reader never sees half a file, and a full disk leaves none."""
    try:
        write_bytes_atomically(path, text.encode())
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None


def _write_pngs(placed: Sequence[tuple[Plot, Path]]) -> bool:
    """All PNGs in one browser session, each plot's in its folder; False when kaleido finds no browser."""
    specs = [
        {
            "fig": plot.figure,
            "path": place / f"{plot.name}.png",
            "opts": {
                "format": "png",
                "width": plot.figure.layout.width or PNG_WIDTH,
                "height": plot.figure.layout.height or PNG_HEIGHT,
            },
        }
        for plot, place in placed
    ]
    try:
        kaleido.write_fig_from_object_sync(specs)
    except ChromeNotFoundError:
        return False
    except Exception as error:  # kaleido wraps browser failures in many types; any of them means no PNG
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        html = worded(cli="--format html", api="formats='html'")
        raise UsageError(f"kaleido could not render PNG ({reason}); export with {html} instead") from None
    return True
