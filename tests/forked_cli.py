"""Run the console script's entry point in fresh processes forked from one that imported it already.

Most commands a test runs run in the test process (`tests.conftest.archsearch`). A test that needs the
command in a process of its own (to signal or kill it: `start_archsearch`; `archsearch(..., process=True)`)
would pay the interpreter's start and the imports each time: about 0.5 s of CPU for a command that reads,
4 s for one that trains (torch takes 2.3, and 1.5 more for the torch._dynamo it imports when a command
builds its first optimizer). So such a command goes to a server (this module run as a script) that
imported torch and our packages once, before any thread or torch operation started; for each command it
forks a child that takes the command's argv,
working folder, environment and standard streams, calls `search.cli.run` (what the console script calls)
and exits with its status, as the script would. The child is a real process of its own, so a command can
spawn workers, catch signals and be killed as when run from a shell.

What the preload changes, and how the child makes up for it: OpenMP read OMP_NUM_THREADS when torch was
imported, so the child sets torch's thread count from the command's environment. A start-up hook (a
sitecustomize.py on the command's PYTHONPATH) runs only when an interpreter starts, so the child runs the
command's hook itself (`run_startup_hooks`); a hook that must act while the interpreter starts (before our
modules are imported) needs the real script, as do the tests about the script itself (which modules a
command imports, argv bytes from the shell), and conftest.archsearch runs a command given a PYTHONPATH
through it. The server also reads the MNIST files of ARCHSEARCH_DATA once
(search.engine.data keeps them per folder), so a child skips that read; a command given another folder (a
damaged copy, a synthetic one) reads its own.

Protocol, one JSON object per line: the client sends {"id", "argv0", "argv", "cwd", "env", "stdout", "stderr",
"session"} (paths of files the child's streams go to; `session`: the child starts a session of its own, as
Popen's start_new_session) or {"kill": id}; the server answers {"id", "pid"} when it has forked the child and
{"id", "status"} when the child ends, `status` as subprocess gives it (-N for a signal). `conftest.archsearch`
waits for the status; `conftest.start_archsearch` returns a Popen-like ForkedProcess at once, for a test that
signals or kills the command while it runs.
"""

from __future__ import annotations

import contextlib
import json
import locale
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve() -> None:
    """Read commands on stdin, fork a child for each, answer each child's exit status on stdout."""
    import torch  # the import a training command would pay
    import torch._dynamo  # noqa: F401  torch imports it (with sympy) at the first optimizer a command builds: 1.5 s

    import search.api  # Optuna, SQLAlchemy and the study layer, which every command but `budget` imports
    import search.cli
    import search.engine.trainer
    import search.results.dashboard  # plotly and optuna-dashboard, for the figures a study keeps
    import search.results.export
    import search.results.report
    import search.study.objective
    from search.engine.data import _load_arrays, data_root

    if os.environ.get("ARCHSEARCH_DATA"):  # the real MNIST, decompressed once rather than by each command: 0.25 s
        with contextlib.suppress(Exception):  # a missing or damaged copy is the commands' to report
            _load_arrays(str(data_root()), "mnist")

    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    children: dict[int, str] = {}  # pid: request id
    selector = selectors.DefaultSelector()
    selector.register(requests, selectors.EVENT_READ)
    pending = b""
    open_input = True
    while open_input or children:
        if open_input and selector.select(timeout=0.01 if children else None):
            chunk = os.read(requests.fileno(), 1 << 16)
            if not chunk:
                open_input = False
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                if "kill" in request:
                    for pid, ident in children.items():
                        if ident == request["kill"]:
                            os.kill(pid, signal.SIGKILL)
                    continue
                pid = os.fork()
                if pid == 0:
                    run_child(request, search.cli.run)  # never returns
                children[pid] = request["id"]
                replies.write(json.dumps({"id": request["id"], "pid": pid}).encode() + b"\n")
                replies.flush()
        while children:  # once no more commands can come, wait for the last children
            pid, status = os.waitpid(-1, os.WNOHANG if open_input else 0)
            if pid == 0:
                break
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            replies.write(json.dumps({"id": children.pop(pid), "status": code}).encode() + b"\n")
            replies.flush()


def run_child(request: dict, entry_point) -> None:
    """Become the command: its folder, environment, streams and argv; then exit as the script would."""
    code = 1
    try:
        if request.get("session"):
            os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        written = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], written),
                                (2, request["stderr"], written)):  # fmt: skip
            opened = os.open(path, flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        run_startup_hooks()
        threads = os.environ.get("OMP_NUM_THREADS")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        sys.argv = [request["argv0"], *request["argv"]]
        try:
            entry_point()
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
        except BaseException:  # what the interpreter does with an exception nothing caught
            import traceback

            traceback.print_exc()
        import atexit

        run_exit_functions = getattr(atexit, "_run_exitfuncs", None)  # private: what the interpreter runs at exit
        if run_exit_functions is not None:
            run_exit_functions()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    finally:
        os._exit(code)


def run_startup_hooks() -> None:
    """Run the sitecustomize.py of the command's PYTHONPATH, as an interpreter does when it starts: a test's
    hook (tests/conftest.py paced_epochs) then reaches a forked command as it reaches the fresh interpreters of
    the workers that command spawns, which inherit the PYTHONPATH."""
    import runpy

    for folder in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        hook = Path(folder) / "sitecustomize.py"
        if hook.is_file():
            runpy.run_path(str(hook), run_name="sitecustomize")
            return  # the interpreter imports the first one it finds


class Server:
    """One server process per test process, started at the first command, shared by its threads."""

    def __init__(self, argv0: str):
        self.argv0 = argv0
        env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.forked_cli"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        self.lock = threading.Lock()
        self.waiting: dict[str, Future] = {}  # request id: its exit status, to come
        self.started: dict[str, Future] = {}  # request id: its pid, to come
        self.count = 0
        threading.Thread(target=self._read_replies, daemon=True).start()

    def _read_replies(self) -> None:
        for line in self.process.stdout:
            reply = json.loads(line)
            started = "pid" in reply
            with self.lock:
                future = (self.started if started else self.waiting).pop(reply["id"])
            future.set_result(reply["pid"] if started else reply["status"])
        with self.lock:
            for future in [*self.waiting.values(), *self.started.values()]:
                future.set_exception(RuntimeError("the forked-CLI server ended"))

    def _send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def start(
        self, args, env: dict, cwd, stdout: Path, stderr: Path, new_session: bool = False
    ) -> tuple[str, int, Future]:
        """Fork the command, its streams going to these files: (request id, its pid, its exit status to come)."""
        status: Future = Future()
        pid: Future = Future()
        with self.lock:
            self.count += 1
            ident = str(self.count)
            self.waiting[ident] = status
            self.started[ident] = pid
            request = {"id": ident, "argv0": self.argv0, "argv": list(args), "cwd": str(cwd or os.getcwd()),
                       "env": env, "stdout": str(stdout), "stderr": str(stderr), "session": new_session}  # fmt: skip
            self._send(request)
        return ident, pid.result(timeout=300), status

    def kill(self, ident: str) -> None:
        with self.lock:
            self._send({"kill": ident})

    def run(self, args, env: dict, cwd, timeout: float) -> subprocess.CompletedProcess:
        """The command's CompletedProcess, as subprocess.run(..., capture_output=True, text=True) gives it."""
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            out.touch()
            err.touch()
            ident, _, future = self.start(args, env, cwd, out, err)
            try:
                status = future.result(timeout=timeout)
            except TimeoutError:
                self.kill(ident)
                status = future.result(timeout=300)
                raise subprocess.TimeoutExpired(args, timeout) from None
            encoding = locale.getpreferredencoding(False)
            return subprocess.CompletedProcess(
                [self.argv0, *args], status, out.read_text(encoding), err.read_text(encoding)
            )


class ForkedProcess:
    """A command forked by the server, as a test drives a subprocess.Popen: pid, poll, wait, signals.

    Its exit status comes from the server, which is its parent; signals go to its pid directly."""

    def __init__(self, server: Server, args, env: dict, cwd, stdout: Path, stderr: Path, new_session: bool):
        self.args = args
        self.server = server
        self.ident, self.pid, self._status = server.start(args, env, cwd, stdout, stderr, new_session)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self._status.done():
            self.returncode = self._status.result()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        try:
            self.returncode = self._status.result(timeout=timeout)
        except TimeoutError:
            raise subprocess.TimeoutExpired(self.args, timeout) from None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    serve()
