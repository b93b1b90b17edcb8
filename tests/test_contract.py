"""The command-line contract under generated hostile input: every command, every flag, every study-file key.

Whatever the input, a run ends with exit status 0, 2, 130 or 143, no traceback, and no exception escaping
`main()`. One that exits 2 (bad input) says why in exactly one line, `archsearch[ CMD]: error: ...`, and
leaves the working folder as it was: every file keeps its bytes (a SQLite database holding a finished
search study `s` and a finished grid study `g`, their saved models, two study files, an exports folder,
an exported model, a plain text file) and no file or folder appears, save the side files of a SQLite
reader (an empty `studies.db-wal`, a `studies.db-shm`). Whatever the status, nothing is written outside
the working folder unless a flag's value names a path there (a study name never does), and no value ever
runs in a shell (`x;touch PWNED;#`).

What is generated comes from the code, so a new flag or key is covered without touching this file: the
flags from the real parser (`search.cli.build_parser()`), one test per (command, flag); the study-file
keys from the dataclasses (`StudyConfig` and its `[space]` table, `GridConfig` and its `[train]` table),
one test per key. Each case is a fast valid command (or study file) with that flag or key, and maybe
one more, given a hostile value: non-finite, huge, negative, zero, empty, a list of the wrong length,
the wrong type, non-UTF-8 (lone surrogates in argv, invalid bytes in TOML), path-like.

How a case runs: `search.cli.main(argv)` in this process (warm imports and data: milliseconds for a
refused input), with stdout and stderr as UTF-8 streams, in a working folder restored before each case
at the same absolute path (a study stores its artifact folder's absolute path), under a memory cap. A
valid input may ask for hours of work or serve a dashboard forever: after CASE_SECONDS (for a dashboard,
a moment after it says it serves) the run gets SIGTERM, as a scheduler would send it, and must then stop
as the contract says. A few cases run the installed console script: non-UTF-8 bytes in argv, and the
dashboard of the hostile tester's report.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import io
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from search.cli import build_parser, main
from search.study.config import StudyConfig
from search.study.grid import GridConfig
from tests.conftest import ENTRY_POINT, free_port

EXIT_STATUSES = {0, 2, 130, 143}
ONE_LINE_ERROR = re.compile(r"^archsearch( [a-z]+)?: error: \S.*$")
CASE_SECONDS = 2.5  # then SIGTERM: a valid command still working has taken its input
SERVING_GRACE = 0.5  # a dashboard that says it serves must keep serving this long (a crashing refresher...)
STOP_SECONDS = 120.0  # after SIGTERM, a run must have stopped within this long: a hang guard, not a speed test
HANG_GUARD_SECONDS = 600.0  # a valid base command must finish; only a hang would take this long
MEMORY_CAP = 4 << 30  # address space a case may add: a huge net or grid fails in the case, not the machine
# Generated cases per flag and per study-file key (derandomized: the same each run); more for a deeper run.
EXAMPLES = int(os.environ.get("ARCHSEARCH_CONTRACT_EXAMPLES", "2"))
SEARCH_STUDY, GRID_STUDY = "s", "g"
SIDE_FILES = ("a/b/work/studies.db-wal", "a/b/work/studies.db-shm")

# ---------------------------------------------------------------------------------------------------------------
# Hostile values. Placeholders, filled in per case: {work} the working folder, {box} the folder around it (the
# working folder is {box}/a/b/work), {db} the SQLite URL of {work}/studies.db, {port} a free TCP port.
# /etc/passwd stands for {box}/etc/passwd, a plain text file outside the working folder: the real one is never
# handed to a command that may write to it (`best --export /etc/passwd` is a valid command).

NUMBERS = [
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e-320", "1000000000", "1" + "0" * 30,
    str(2**64), str(2**63), "-1", "-0", "0", "0.0", "0.5", "1e3", "0x10", "1_000", " 7", "\u0667", "True",
]  # fmt: skip
EMPTY = ["", " ", ",", ",,", "[]", "1,,2"]
LISTS = ["1,2,3", "1,1", "-1,2", "5000,nan", "0,1", "1," + "9" * 30, "[1, 2, 3]"]
PATHS = [
    "../../x", "/etc/passwd", "a/b", "x;touch PWNED;#", "$(touch PWNED)", "a\nb", "x\r\ny", "\udcff", "x\udcffy",
    "\u202ex", "-", "--", "-x", ".", "..", "~", "x" * 300, "{work}", "notes.txt", "search.toml", "model.pt",
    "exports", "artifacts", "studies.db", "{box}/etc", "{box}/a/b/new/x",
]  # fmt: skip
URLS = [
    "sqlite:///notes.txt", "sqlite:////etc/passwd", "sqlite:///{work}", "sqlite:///{work}/exports",
    "sqlite:///{work}/none/x.db", "sqlite://", "sqlite:///:memory:", "sqlite:///", "journal:{work}",
    "journal:notes.txt", "journal:", "postgresql://user:secret@127.0.0.1:1/db", "ftp://x/y", "not a url", "{db}",
]  # fmt: skip
ARG_VALUES = NUMBERS + EMPTY + LISTS + PATHS + URLS
TEXT = st.text(alphabet="aZé -_.,/:;=\n\t\udcff\u202e", max_size=6)  # no digits: no accidental --workers 16


# ---------------------------------------------------------------------------------------------------------------
# The commands and their flags, from the real parser, and a fast valid base command for each.


@dataclass(frozen=True)
class Flag:
    name: str  # the long option, or a positional's dest
    takes_value: bool
    positional: bool
    valid: tuple[str, ...]  # its choices, or its default


def parser_flags() -> dict[str, list[Flag]]:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    found = {}
    for command, sub in commands.choices.items():
        flags = []
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            default = action.default
            plain_default = default not in (None, argparse.SUPPRESS) and not isinstance(default, bool | list | tuple)
            flags.append(
                Flag(
                    name=max(action.option_strings, key=len) if action.option_strings else action.dest,
                    takes_value=action.nargs != 0,
                    positional=not action.option_strings,
                    valid=tuple(map(str, action.choices or ([default] if plain_default else []))),
                )
            )
        found[command] = flags
    return found


FLAGS = parser_flags()
QUICK = ("--epochs", "1", "--data-limit", "200", "--device", "cpu")
BASE: dict[str, tuple[str, ...]] = {
    "budget": ("5000",),
    "baseline": QUICK,
    "search": ("--study", SEARCH_STUDY, "--storage", "{db}", "--trials", "2", "--budget", "20000", "--max-depth", "2",
               *QUICK),
    "grid": ("--study", GRID_STUDY, "--storage", "{db}", "--budgets", "5000", "--depths", "1", "--seeds", "1", *QUICK),
    "frontier": ("--study", "cf", "--storage", "{db}", "--budgets", "5000", "--trials", "1", "--max-depth", "1",
                 "--seeds", "1", "--format", "html", *QUICK),
    "worker": ("--study", SEARCH_STUDY, "--storage", "{db}", "--device", "cpu"),
    "best": ("--study", SEARCH_STUDY, "--storage", "{db}", "--device", "cpu"),
    "export": ("--study", SEARCH_STUDY, "--storage", "{db}", "--format", "html"),
    "report": ("--storage", "{db}", "--out", "report", "--init-epochs", "1", "--data-limit", "200", "--device", "cpu"),
    "dashboard": ("--storage", "{db}", "--port", "{port}"),
}  # fmt: skip


def base_pairs(command: str) -> list[tuple[str, str | None]]:
    """The base command as (flag, value) pairs; a positional's flag is its dest."""
    flags = {f.name: f for f in FLAGS[command]}
    positionals = [f.name for f in FLAGS[command] if f.positional]
    tokens, pairs = list(BASE.get(command, ())), []
    while tokens:
        token = tokens.pop(0)
        if token in flags:
            pairs.append((token, tokens.pop(0) if flags[token].takes_value else None))
        else:
            pairs.append((positionals.pop(0), token))
    return pairs


@st.composite
def perturbed_command(draw, command: str, flag: Flag) -> list[str]:
    """The base command with `flag`, and maybe one more, given a hostile value (or, rarely, left out)."""
    flags = FLAGS[command]
    pairs = base_pairs(command)
    chosen = [flag]
    if len(flags) > 1 and draw(st.booleans()):
        chosen.append(draw(st.sampled_from([f for f in flags if f != flag])))
    joined = set()
    for target in chosen:
        present = any(name == target.name for name, _ in pairs)
        pairs = [(name, value) for name, value in pairs if name != target.name]
        if present and draw(st.integers(0, 9)) == 9:
            continue
        if not target.takes_value:
            pairs.append((target.name, None))
            continue
        value = draw(st.one_of(st.sampled_from(ARG_VALUES), st.sampled_from(target.valid or ("1",)), TEXT))
        if not target.positional and draw(st.booleans()):
            joined.add(target.name)  # --flag=value: how a value that starts with "-" gets through
        pairs.append((target.name, value))
    positional = {f.name for f in flags if f.positional}
    argv = [command]
    for name, value in pairs:
        if value is None:
            argv.append(name)
        elif name in positional:
            argv.append(value)
        else:
            argv += [f"{name}={value}"] if name in joined else [name, value]
    return argv


# ---------------------------------------------------------------------------------------------------------------
# Study files: TOML whose keys come from the dataclasses.


class Raw(bytes):
    """TOML written as it is: bytes that are not UTF-8, or a literal Python cannot hold (1e309)."""


NOT_UTF8 = [Raw(b'"\xff\xfe"'), Raw(b'"x\xed\xb3\xbfy"'), Raw(b'"caf\xe9"'), Raw(b"\xff")]
INF_LITERALS = [Raw(b"1e309"), Raw(b"-1e309")]  # TOML floats that overflow to infinity
# Values of any key, whatever its type: the wrong type, or of the right type and hostile.
TOML_SCALARS = [
    math.nan, math.inf, -math.inf, *INF_LITERALS, 10**9, 10**30, 2**64, 2**63, -(2**63) - 1, -1, 0, -0.0, 1e-320,
    0.5, 3, "", ",", " ", "x", "nan", "10", True, False, "../../x", "/etc/passwd", "a/b", "x;touch PWNED;#", "a\nb",
    "\u202ex", "sqlite:///notes.txt", "sqlite:///{work}", "journal:{work}",
]  # fmt: skip
# Values of the key's own type that a check must still refuse (or take): by the type of the field.
TYPED = {
    int: [0, -1, 10**9, 2**63, 2**64, 10**30, -(2**63) - 1, 4294967296, 1.5, True],
    float: [math.nan, math.inf, -math.inf, *INF_LITERALS, 0.0, -0.0, -1.0, 1e-320, 1e300, 10**30],
    str: ["", " ", "x", "a\nb", "../../x", "/etc/passwd", "x;touch PWNED;#", "\u202ex", "x" * 300, *NOT_UTF8[:2]],
    bool: ["true", 1, 0],
    tuple[float, float]: [[], [0.1], [0.0, 0.1, 0.2], [1e-4, math.inf], [math.nan, 0.1], [0.5, 0.1], [0, 0],
                          [-1, 1], [1e-320, 1], [0.1, 10**30], [Raw(b"1e309"), 1]],
    tuple[str, ...]: [[], ["adam", "adam"], ["x"], [""], ["adam", 1], ["a\nb"], [math.nan], ["uniform"]],
    tuple[int, ...]: [[], [0], [-1], [5000, 5000], [10**30], [2**64], [1, 2.5], [math.nan], [64, 128, 256]],
}  # fmt: skip
TABLE_VALUES = [5, "x", [], {}, {"unknown": 1}, {"max_depth": 10**9}, {"epochs": -1}]


def toml_values(hint: Any, default: Any) -> st.SearchStrategy:
    """A key's values: of its own type and hostile, of any type, its default, not UTF-8, a table."""
    typed = TABLE_VALUES if dataclasses.is_dataclass(hint) else TYPED.get(hint, [])
    return st.one_of(
        st.sampled_from(typed or TOML_SCALARS),
        st.sampled_from(TOML_SCALARS),
        st.just(default),
        st.lists(st.sampled_from(TOML_SCALARS), max_size=3),
        st.sampled_from(NOT_UTF8),
        st.dictionaries(st.sampled_from(["a", "lr"]), st.sampled_from([1, "x"]), min_size=1, max_size=1),
    )


def field_of(cls: type, key: str) -> tuple[Any, Any]:
    """The type and default (as TOML holds it) of `key` ('table.key' for a table's) of a study file."""
    table, _, name = key.rpartition(".")
    if table:
        cls = tables_of(cls)[table]
    (found,) = [f for f in dataclasses.fields(cls) if f.name == name]
    default = found.default if found.default is not dataclasses.MISSING else found.default_factory()
    default = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default
    return get_type_hints(cls)[name], json.loads(json.dumps(default))


def tables_of(cls: type) -> dict[str, type]:
    """The fields of `cls` that are tables (dataclasses) in its study file."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def keys_of(cls: type) -> list[str]:
    """Every key of a study file: the top-level fields (a table's name too), and each table's as 'table.key'."""
    keys = [f.name for f in dataclasses.fields(cls)]
    for table, inner in tables_of(cls).items():
        keys += [f"{table}.{f.name}" for f in dataclasses.fields(inner)]
    return keys


# The valid, fast study files a case starts from: a new study each, so a valid one trains (one or two trials).
STUDY_FILES: dict[str, tuple[type, dict[str, Any]]] = {
    "search": (StudyConfig, {"name": "t", "budget": 20000, "trials": 1, "epochs": 1, "data_limit": 200,
                             "storage": "sqlite:///studies.db", "space": {"max_depth": 2}}),
    "grid": (GridConfig, {"name": "gt", "budgets": [5000], "depths": [1], "seeds": 1, "data_limit": 200,
                          "storage": "sqlite:///studies.db", "train": {"epochs": 1}}),
}  # fmt: skip


def toml_value(value: Any) -> bytes:
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, float) and not math.isfinite(value):
        return b"nan" if math.isnan(value) else b"inf" if value > 0 else b"-inf"
    if isinstance(value, int | float):
        return repr(value).encode()
    if isinstance(value, str):
        return json.dumps(value).encode()  # JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return b"[" + b", ".join(map(toml_value, value)) + b"]"
    if isinstance(value, dict):
        return b"{" + b", ".join(k.encode() + b" = " + toml_value(v) for k, v in value.items()) + b"}"
    raise TypeError(value)


def toml_file(cls: type, document: dict[str, Any]) -> bytes:
    tables = tables_of(cls)
    top = [
        f"{k} = ".encode() + toml_value(v) + b"\n"
        for k, v in document.items()
        if not (k in tables and isinstance(v, dict))
    ]
    nested = [
        f"\n[{k}]\n".encode() + b"".join(f"{key} = ".encode() + toml_value(value) + b"\n" for key, value in v.items())
        for k, v in document.items()
        if k in tables and isinstance(v, dict)
    ]
    return b"".join(top + nested)


@st.composite
def perturbed_study_file(draw, kind: str, key: str) -> bytes:
    """The base study file with `key`, and maybe one more, given a hostile value."""
    cls, base = STUDY_FILES[kind]
    document = json.loads(json.dumps(base))
    chosen = [key] + ([draw(st.sampled_from(keys_of(cls)))] if draw(st.integers(0, 3)) == 3 else [])
    for target in chosen:
        table, _, name = target.rpartition(".")
        where = document.setdefault(table, {}) if table else document
        if isinstance(where, dict):
            where[name] = draw(toml_values(*field_of(cls, target)))
    return toml_file(cls, document)


# ---------------------------------------------------------------------------------------------------------------
# The working folder.


@dataclass(repr=False)
class World:
    root: Path
    env: dict[str, str]
    box: Path = field(init=False)  # what a case may touch: the working folder inside, a few files outside it
    work: Path = field(init=False)
    pristine: Path = field(init=False)
    state: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.box, self.pristine = self.root / "box", self.root / "pristine"
        self.work = self.box / "a" / "b" / "work"

    def _repr_pretty_(self, printer, cycle) -> None:  # how hypothesis shows a failing case: not every hash
        printer.text(f"World({self.box})")

    def fill(self, value: str) -> str:
        if "/etc/passwd" in value:
            value = value.replace("/etc/passwd", "{box}/etc/passwd")
        for name, filled in (
            ("{db}", f"sqlite:///{self.work}/studies.db"), ("{work}", str(self.work)), ("{box}", str(self.box)),
        ):  # fmt: skip
            value = value.replace(name, filled)
        if "{port}" in value:
            value = value.replace("{port}", str(free_port()))
        return value

    def restore(self) -> None:
        shutil.rmtree(self.box, ignore_errors=True)
        shutil.copytree(self.pristine, self.box, symlinks=True)

    def keep(self) -> None:
        """What is in the working folder now is what every case starts from."""
        shutil.rmtree(self.pristine, ignore_errors=True)
        shutil.copytree(self.box, self.pristine, symlinks=True)
        self.state = snapshot(self.pristine)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file (its SHA-256), folder and link under `folder`, by relative path."""
    state = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            state[relative] = f"link to {os.readlink(path)}"
        elif path.is_dir():
            state[relative] = "folder"
        elif path.is_file():
            state[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[relative] = "not a file"
    return state


EMPTY_FILE = hashlib.sha256(b"").hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Running a case.


@dataclass
class Outcome:
    argv: list[str]
    before: dict[str, str]  # the folder's state the case started from
    status: int | None = None
    stdout: str = ""
    stderr: str = ""
    escaped: str = ""  # an exception that escaped main(): its traceback
    stopped: str = ""  # why the harness sent SIGTERM, if it did
    stuck: bool = False  # it did not stop within STOP_SECONDS of SIGTERM, and Stuck was raised into it
    study_file: bytes = b""


class Stuck(BaseException):
    """Raised into a run that did not stop within STOP_SECONDS of SIGTERM."""


def run_case(world: World, argv: list[str], study_file: bytes | None = None, seconds: float = CASE_SECONDS) -> Outcome:
    """main(argv) in the restored working folder, as the console script runs it; what it did."""
    argv = [world.fill(a) for a in argv]
    world.restore()
    before = world.state
    if study_file is not None:
        for name, filled in ((b"/etc/passwd", b"{box}/etc/passwd"), (b"{work}", bytes(world.work)),
                             (b"{box}", bytes(world.box))):  # fmt: skip
            study_file = study_file.replace(name, filled)
        (world.work / "case.toml").write_bytes(study_file)
        before = {**before, "a/b/work/case.toml": hashlib.sha256(study_file).hexdigest()}
    outcome = Outcome(argv, before, study_file=study_file or b"")
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)  # strict, as under a UTF-8 locale
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    limits = resource.getrlimit(resource.RLIMIT_AS)
    done = threading.Event()
    cwd = os.getcwd()

    def stuck(signum, frame):
        outcome.stuck = True
        raise Stuck

    def watch() -> None:
        """SIGTERM when the time is up, or a moment after a dashboard says it serves; Stuck if that is ignored."""
        deadline, serving = time.monotonic() + seconds, None
        while not done.wait(0.02):
            now = time.monotonic()
            if serving is None and b"Ctrl-C stops it" in out.getvalue():
                serving = now
            if now > deadline or (serving is not None and now > serving + SERVING_GRACE):
                outcome.stopped = "a serving dashboard" if serving else f"still working after {seconds} s"
                os.kill(os.getpid(), signal.SIGTERM)
                if not done.wait(STOP_SECONDS):
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)
                return

    signal.signal(signal.SIGTERM, lambda *_: None)  # a SIGTERM after main() returned must not end pytest
    signal.signal(signal.SIGALRM, stuck)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + MEMORY_CAP, limits[1]))
    watcher = threading.Thread(target=watch, daemon=True)
    saved_streams = sys.stdout, sys.stderr, sys.argv
    try:
        os.chdir(world.work)
        sys.stdout, sys.stderr, sys.argv = stdout, stderr, [str(ENTRY_POINT), *argv]
        watcher.start()
        try:
            outcome.status = main(argv)
        except SystemExit as stop:
            outcome.status = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            outcome.escaped = traceback.format_exc()
    finally:
        done.set()
        sys.stdout, sys.stderr, sys.argv = saved_streams
        watcher.join()
        resource.setrlimit(resource.RLIMIT_AS, limits)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        os.chdir(cwd)
    outcome.stdout = out.getvalue().decode("utf-8", "backslashreplace")
    outcome.stderr = err.getvalue().decode("utf-8", "backslashreplace")
    gc.collect()  # close what a process's exit would close: SQLite connections checkpoint and drop their -wal
    return outcome


def _address_space() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))


def run_entry_point(world: World, argv: list[str | bytes], serve: bool = False) -> Outcome:
    """The installed console script itself (argv may hold bytes that are not UTF-8); a server is stopped
    with SIGTERM a moment after it says it serves."""
    filled = [world.fill(a) if isinstance(a, str) else a for a in argv]
    world.restore()
    shown = [a if isinstance(a, str) else a.decode("utf-8", "surrogateescape") for a in filled]
    outcome = Outcome(shown, world.state)
    with subprocess.Popen(
        [str(ENTRY_POINT), *filled], cwd=world.work, env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        started = b""
        if serve:
            started = _first_line(process, deadline=time.monotonic() + 60)
            if b"Ctrl-C stops it" in started:
                time.sleep(SERVING_GRACE + 1)
                outcome.stopped = "a serving dashboard"
                process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            outcome.escaped = "did not stop within 300 s"
        outcome.status = process.returncode
    stdout = started + stdout
    outcome.stdout, outcome.stderr = (s.decode("utf-8", "backslashreplace") for s in (stdout, stderr))
    return outcome


def _first_line(process: subprocess.Popen, deadline: float) -> bytes:
    """The first line of the process's stdout, or what came before it ended or the deadline passed."""
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            byte = os.read(process.stdout.fileno(), 1)
            if not byte:
                break
            line += byte
    return line


# ---------------------------------------------------------------------------------------------------------------
# The contract.


def problems(world: World, outcome: Outcome) -> list[str]:
    """What a case did against the contract (an empty list: nothing)."""
    found = []
    if outcome.stuck:  # named first: raised inside Optuna's record of a trial, Stuck shows as an UnboundLocalError
        found.append(f"still running {STOP_SECONDS} s after SIGTERM ({outcome.stopped})")
    if outcome.escaped:
        found.append(f"an exception escaped main(): {outcome.escaped.strip().splitlines()[-1]}")
    if outcome.status not in EXIT_STATUSES:
        found.append(f"exit status {outcome.status}: {last_line(outcome.stderr)}")
    if "Traceback" in outcome.stderr:
        found.append(f"a traceback on stderr: {last_line(outcome.stderr)}")
    after = snapshot(world.box)
    before = outcome.before
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    if any(Path(p).name == "PWNED" for p in after):
        found.append("a value ran in a shell: PWNED was created")
    outside = [p for p in changed if not p.startswith("a/b/work/")]
    if outside and not names_outside(world, outcome):
        found.append(f"wrote outside the working folder: {', '.join(outside)}")
    if outcome.status == 2:
        lines = outcome.stderr.splitlines()
        if len(lines) != 1 or not ONE_LINE_ERROR.match(lines[0]):
            found.append(f"exit 2 without exactly one error line: stderr {outcome.stderr[-600:]!r}")
        wal_empty = after.get(SIDE_FILES[0], EMPTY_FILE) == EMPTY_FILE
        touched = [p for p in changed if not (p in SIDE_FILES and p not in before and wal_empty)]
        if touched:
            found.append(f"exit 2, but changed or created: {', '.join(touched)}")
    return found


def names_outside(world: World, outcome: Outcome) -> bool:
    """Whether the command asked for a path outside the working folder: a flag's value (never a study's name)
    or a study file's string. Writing there is then what the user asked for."""
    argv = outcome.argv
    values = [
        a.split("=", 1)[-1] if a.startswith("--") else a
        for i, a in enumerate(argv)
        if not a.startswith("--study=") and (i == 0 or argv[i - 1] != "--study")
    ]
    for line in outcome.study_file.decode("utf-8", "replace").splitlines():
        if not line.startswith("name ="):
            values += re.findall(r'"([^"]*)"', line)
    for value in values:
        path = re.sub(r"^(sqlite:/{2,3}|journal:)", "", value)
        if not path:
            continue
        where = Path(world.fill(path)) if path.startswith(("/", "{")) else world.work / path
        if not os.path.normpath(where).startswith(str(world.work)):
            return True
    return False


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(nothing on stderr)"


def check(world: World, outcome: Outcome) -> None:
    found = problems(world, outcome)
    shown = " ".join(a if re.fullmatch(r"[\w./:=,+@-]+", a) else ascii(a) for a in outcome.argv)
    if outcome.study_file:
        shown += f"\n  with case.toml = {outcome.study_file!r}"
    assert not found, f"archsearch {shown}\n  " + "\n  ".join(found)


# ---------------------------------------------------------------------------------------------------------------
# The fixture: one working folder with finished studies, restored before every case.


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_mnist) -> World:
    env = {"ARCHSEARCH_DATA": str(tiny_mnist), "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as patch:
        for name in ("ARCHSEARCH_STORAGE", "ARCHSEARCH_DEBUG"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        world = World(tmp_path_factory.mktemp("contract"), env)
        world.work.mkdir(parents=True)
        (world.box / "etc").mkdir()
        (world.box / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (world.work / "notes.txt").write_text("a plain text file, not a database\n")
        for kind, (cls, document) in STUDY_FILES.items():
            (world.work / f"{kind}.toml").write_bytes(toml_file(cls, document))
        world.keep()
        for argv in (
            ["search", *BASE["search"]],
            ["grid", *BASE["grid"]],
            ["best", *BASE["best"], "--export", "model.pt"],
            ["export", "--study", GRID_STUDY, "--storage", "{db}", "--format", "html"],
        ):
            outcome = run_case(world, argv, seconds=HANG_GUARD_SECONDS)  # the first run loads torch and the data
            assert outcome.status == 0, (argv, outcome.stderr)
            world.keep()
        assert not (world.work / "studies.db-wal").exists()
        assert {"a/b/work/model.pt", "a/b/work/exports/g", "a/b/work/artifacts"} <= set(world.state)
        gc.collect()
        gc.freeze()  # torch's and the CLI's objects, loaded once: each case's gc.collect() skips them
        try:
            yield world
        finally:
            gc.unfreeze()


# ---------------------------------------------------------------------------------------------------------------
# The tests.

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run; test_known_hostile_examples keeps the known ones
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a case is already one or two values away from a valid command
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
FLAG_CASES = [(command, flag) for command, flags in FLAGS.items() for flag in flags]
KEY_CASES = [(kind, key) for kind, (cls, _) in STUDY_FILES.items() for key in keys_of(cls)]


def test_every_command_has_a_valid_base(world):
    """Each base command is valid and finishes (a dashboard serves): the cases built on it then test only
    their one hostile value. How fast it finishes is no part of the contract, so only a hang fails it."""
    assert set(FLAGS) <= set(BASE), f"add a base command for: {sorted(set(FLAGS) - set(BASE))}"
    for command in BASE:
        outcome = run_case(world, [command, *BASE[command]], seconds=HANG_GUARD_SECONDS)
        check(world, outcome)
        if command == "dashboard":
            assert outcome.stopped == "a serving dashboard", outcome.stderr
        else:
            assert outcome.status == 0 and not outcome.stopped, (command, outcome.stopped, outcome.stderr)


@pytest.mark.parametrize(("command", "flag"), FLAG_CASES, ids=[f"{c}-{f.name.lstrip('-')}" for c, f in FLAG_CASES])
@SETTINGS
@given(data=st.data())
def test_every_flag_keeps_the_contract(world, command, flag, data):
    check(world, run_case(world, data.draw(perturbed_command(command, flag), label="argv")))


@pytest.mark.parametrize(("kind", "key"), KEY_CASES, ids=[f"{kind}-{key}" for kind, key in KEY_CASES])
@SETTINGS
@given(data=st.data())
def test_every_study_file_key_keeps_the_contract(world, kind, key, data):
    content = data.draw(perturbed_study_file(kind, key), label="case.toml")
    check(world, run_case(world, [kind, "--config", "case.toml", "--device", "cpu"], study_file=content))


@pytest.mark.parametrize(
    "argv",
    [
        [b"search", b"--study", b"caf\xe9", b"--storage", "{db}", b"--trials", b"1", *map(str.encode, QUICK)],
        [b"best", b"--study", b"\xff", b"--storage", "{db}"],
        [b"export", b"--study", b"s\xff", b"--storage", "{db}", b"--out", b"out\xfe"],
        [b"search", b"--config", b"\xff.toml", b"--storage", "{db}"],
        [b"budget", b"5\xff"],
        [b"export", b"--study", b"s", b"--storage", "{db}", b"--format", b"html", b"--out", b"caf\xe9"],
    ],
    ids=["search-study", "best-study", "export-study-out", "search-config", "budget", "export-out"],
)
def test_non_utf8_bytes_in_argv_through_the_real_script(world, argv):
    """Bytes a terminal sent in another encoding: Python hands them to argparse as lone surrogates."""
    check(world, run_entry_point(world, argv))


# From a hostile tester's report: each must be refused in one line (exit 2), changing nothing.
HOSTILE_FILES = {  # a key of the valid search study file, and the TOML it is set to
    "toml-lr-inf": ("space.lr", "[1e-4, inf]"),
    "toml-dropout-3-items": ("space.dropout", "[0.0, 0.1, 0.2]"),
    "toml-batch-sizes-empty": ("space.batch_sizes", "[]"),
    "toml-optimizers-empty": ("space.optimizers", "[]"),
    "toml-activations-empty": ("space.activations", "[]"),
    "toml-budget-1e15": ("budget", "1000000000000000"),
    "toml-seed-negative": ("seed", "-1"),
    "toml-seed-2-32": ("seed", "4294967296"),
}
HOSTILE_ARGV = {
    "search-max-depth-20000": ["search", *BASE["search"], "--study", "x", "--max-depth", "20000"],
    "grid-budget-1e15": ["grid", *BASE["grid"], "--study", "y", "--budgets", "1000000000000000", "--depths", "1"],
    "search-study-newline": ["search", *BASE["search"], "--study", "x\ny"],
    "export-study-dotdot": ["export", "--study", "../../evil", "--storage", "{db}"],
    "search-config-not-utf8": ["search", "--config", "binary.toml", "--storage", "{db}"],
    "best-storage-plain-text": ["best", "--study", SEARCH_STUDY, "--storage", "sqlite:///{work}/notes.txt"],
    "best-storage-journal-folder": ["best", "--study", SEARCH_STUDY, "--storage", "journal:{work}"],
    "best-export-onto-symlink": ["best", *BASE["best"], "--export", "link.pt"],
    "best-export-onto-device": ["best", *BASE["best"], "--export", "/dev/null"],
    "worker-timeout-zero": ["worker", *BASE["worker"], "--timeout", "0"],
    "search-workers-huge": ["search", *BASE["search"], "--study", "x", "--workers", "100000"],
    # Found by the generated cases, kept here so that they are tried every run:
    "best-artifacts-elsewhere-export": ["best", *BASE["best"], "--artifacts", "1", "--export", "m.pt"],
    "dashboard-port-double-dash": ["dashboard", "--storage", "{db}", "--port=--"],
    "dashboard-host-not-utf8": ["dashboard", "--storage", "{db}", "--port", "{port}", "--host", "\udcff", "--public"],
    "baseline-data-dir-newline": ["baseline", *QUICK, "--data-dir", "=\n:/=;"],
    "report-init-json-newline": ["report", *BASE["report"], "--init-json", "a\nb.json"],
    "search-new-artifacts-bad-data": ["search", *BASE["search"], "--study", "x", "--artifacts", "new",
                                      "--data-dir", "{work}/none"],
    "search-storage-empty": ["search", *BASE["search"][4:], "--study", "x", "--storage="],
    "search-new-database-bad-data": ["search", *BASE["search"][4:], "--study", "x", "--storage",
                                     "sqlite:///{work}/new/studies.db", "--data-dir", "{work}/none"],
    "grid-new-database-bad-data": ["grid", *BASE["grid"][4:], "--study", "x", "--storage",
                                   "sqlite:///{work}/new/studies.db", "--data-dir", "{work}/none"],
    **{
        f"{command}-cuda-without-a-gpu": [command, *BASE[command], "--device", "cuda"]
        for command in ("baseline", "search", "grid", "worker")
        if not torch.cuda.is_available()
    },
}  # fmt: skip


@pytest.mark.parametrize("name", [*HOSTILE_FILES, *HOSTILE_ARGV, "dashboard-refresh-huge"])
def test_known_hostile_examples(world, name):
    if name == "dashboard-refresh-huge":  # a dashboard that takes it serves: the real script, stopped by SIGTERM
        outcome = run_entry_point(world, ["dashboard", *BASE["dashboard"], "--refresh", "100000000000"], serve=True)
    elif name in HOSTILE_FILES:
        cls, base = STUDY_FILES["search"]
        document = json.loads(json.dumps(base))
        key, value = HOSTILE_FILES[name]
        table, _, key = key.rpartition(".")
        (document[table] if table else document)[key] = Raw(value.encode())
        outcome = run_case(world, ["search", "--config", "case.toml", "--device", "cpu"], toml_file(cls, document))
    else:
        pristine_work = world.pristine / "a" / "b" / "work"
        (pristine_work / "binary.toml").write_bytes(b'name = "caf\xe9"\nbudget = \xff\xfe5000\n')
        (pristine_work / "link.pt").symlink_to("model.pt")
        world.state = snapshot(world.pristine)
        try:
            outcome = run_case(world, HOSTILE_ARGV[name])
        finally:
            (pristine_work / "binary.toml").unlink()
            (pristine_work / "link.pt").unlink()
            world.state = snapshot(world.pristine)
    check(world, outcome)
    assert outcome.status == 2, f"exit {outcome.status} ({outcome.stopped or last_line(outcome.stderr)})"
    assert not (world.work.parent / "evil").exists() and not (world.box / "evil").exists()
    if name == "best-storage-plain-text":
        with open(world.work / "notes.txt", "rb") as text:
            assert text.read() == b"a plain text file, not a database\n"
        with pytest.raises(sqlite3.DatabaseError):
            sqlite3.connect(f"file:{world.work / 'notes.txt'}?mode=ro", uri=True).execute(
                "SELECT name FROM sqlite_master"
            ).fetchall()


def test_sigterm_while_optuna_records_a_trial(world, monkeypatch):
    """SIGTERM lands at any moment of a run; here (found by the generated cases, which stop long runs with
    SIGTERM) while Optuna stores a finished trial's result: the run must still end with 143, not a crash."""
    from optuna.study import _optimize

    record = _optimize._tell_with_warning
    sent = []

    def sigterm_then_record(*args, **kwargs):
        if not sent:
            sent.append(signal.SIGTERM)  # before the signal: its handler may raise at once
            os.kill(os.getpid(), signal.SIGTERM)
        return record(*args, **kwargs)

    monkeypatch.setattr(_optimize, "_tell_with_warning", sigterm_then_record)
    # Only a hang stops it otherwise: CASE_SECONDS' SIGTERM could land first on a busy machine, before any trial.
    outcome = run_case(world, ["search", *BASE["search"], "--study", "n", "--trials", "3"], seconds=HANG_GUARD_SECONDS)
    assert sent, ("no trial was recorded", outcome.status, last_line(outcome.stderr))
    check(world, outcome)
    assert outcome.status == 143, (outcome.status, last_line(outcome.stderr))
