"""Writing a file so that no one else's file is ever written instead: the one way every writer replaces a file.

A temporary file with a predictable name (`.report.html.partial`) can be planted beforehand as a
symbolic link, and writing to it then overwrites whatever the link points at. Here the temporary
file is created exclusively (`tempfile.mkstemp`: O_CREAT | O_EXCL, a random name, mode 0600) in the
target's own folder, and renamed over the target in one step: a reader never sees half a file, a
failure (a full disk) leaves nothing behind, and a link at the target's name is replaced, never
followed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replaced_atomically(path: str | Path) -> Iterator[BinaryIO]:
    """A new binary file that replaces `path` when the block ends without an error, and is removed if it fails."""
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on the disk before the name points at them
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    with replaced_atomically(path) as handle:
        handle.write(data)


def _umask() -> int:
    """The process's umask, so a written file gets the mode any new file would (mkstemp's is 0600).

    Linux shows it in /proc; elsewhere it is read by setting it and setting it back at once."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Umask:")).split()[1], 8)
    current = os.umask(0o077)
    os.umask(current)
    return current
