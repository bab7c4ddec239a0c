"""Parent side of the sandbox: start the child, load the learner's cells, make calls.

The learner's code never runs in this process. :class:`Sandbox` starts ``child.py`` in a new
session, with ``python -I``, a scrubbed environment, a fresh temporary working directory and
its own limits (see :mod:`attncourse.grading.confine`). Requests and answers travel over two
dedicated pipes (stdout/stderr go to /dev/null), tensors by value (:mod:`attncourse.grading.wire`).

A call that runs past ``call_timeout`` or ends the child kills the child's whole process
group and starts a fresh child with the same cells, so later tests still run. An exercise
whose function timed out or crashed ``max_strikes`` times fails its remaining tests at once.
:meth:`Sandbox.close` kills everything the child started (see :func:`kill_tree`).
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import site
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from attncourse.grading import wire


@dataclass(frozen=True)
class Limits:
    """Per-submission sandbox limits (CLI: ``--timeout``, ``--memory``, ``--cpu-time``)."""
    call_timeout: float = 10.0      # wall seconds per call (and per cell at load time)
    memory_mb: int = 3072           # address space of the child (torch alone maps ~0.6 GiB)
    cpu_seconds: int = 120          # CPU seconds per child process (a restart gets a fresh budget)
    startup_timeout: float = 90.0   # importing torch on a busy machine
    total_timeout: float = 300.0    # wall seconds for one submission; later calls fail at once
    max_strikes: int = 2            # timeouts/crashes of one function before its tests fail fast
    max_answer_mb: int = 256        # largest answer accepted from the child
    confine: bool = True            # seccomp / landlock / capability drop where available


class SandboxError(Exception):
    """The child did not answer properly: ``kind`` is 'timeout', 'crash', 'protocol' or 'budget'."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class CallOutcome:
    ok: bool
    value: object = None
    grads: list | None = None
    error: dict | None = None        # {"type", "message", "line"} of a learner exception
    grad_problem: str | None = None
    violations: list[str] = field(default_factory=list)
    elapsed: float = 0.0


# ----------------------------------------------------------------------------- processes
def _set_subreaper() -> None:
    """Orphans of the child are re-parented to us (not init), so we can find and end them."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except Exception:
            pass


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) of every process (Linux /proc); empty elsewhere."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            rest = stat[stat.rindex(")") + 2:].split()
            table[int(name)] = (int(rest[1]), int(rest[2]))
        except (OSError, ValueError, IndexError):
            continue
    return table


def kill_tree(root_pid: int, known_children: set[int]) -> int:
    """SIGKILL ``root_pid``'s process group, all its descendants, and orphans re-parented to us.

    ``known_children`` are our own children that existed before the sandbox started and must
    survive (e.g. a Jupyter kernel in the same test process). Returns how many were killed.
    """
    killed = 0
    me = os.getpid()
    for _ in range(50):
        table = _proc_table()
        victims = set()
        frontier = {root_pid}
        while frontier:  # descendants of the sandbox
            victims |= frontier
            frontier = {p for p, (pp, _) in table.items() if pp in frontier} - victims
        victims |= {p for p, (pp, pg) in table.items() if pg == root_pid}
        orphans = {p for p, (pp, _) in table.items() if pp == me and p not in known_children}
        victims |= orphans
        victims &= set(table) | {root_pid}
        victims.discard(me)
        if not victims:
            break
        try:
            os.killpg(root_pid, signal.SIGKILL)
        except OSError:
            pass
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        for p in victims:  # reap the ones that are our children
            try:
                os.waitpid(p, os.WNOHANG)
            except OSError:
                pass
        if not table:  # no /proc: the process group is all we can do
            break
        time.sleep(0.01)
    return killed


def _our_children() -> set[int]:
    me = os.getpid()
    return {p for p, (pp, _) in _proc_table().items() if pp == me}


def _read_paths(hidden: list[str]) -> list[str]:
    """Directories the child may read after start-up: Python, its packages, attncourse."""
    import attncourse

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             "/usr", "/lib", "/lib64", "/bin", "/etc", "/proc/cpuinfo", "/sys/devices/system/cpu",
             "/dev/null", "/dev/urandom", "/dev/zero",
             os.path.dirname(os.path.abspath(attncourse.__file__))}
    try:
        paths.update(site.getsitepackages())
    except AttributeError:
        pass
    for entry in sys.path:
        if entry and os.path.isdir(entry) and ("site-packages" in entry or "dist-packages" in entry
                                               or entry.startswith(sys.base_prefix)):
            paths.add(entry)
    real = []
    for p in paths:
        p = os.path.realpath(p)
        # never a folder that holds something secret
        if any(os.path.commonpath([p, h]) == p for h in hidden if os.path.exists(h)):
            continue
        real.append(p)
    return sorted(set(real))


_LAUNCH = ("import sys, runpy, importlib.util\n"
           "if importlib.util.find_spec('attncourse') is None: sys.path.append({root!r})\n"
           "sys.argv = ['child'] + sys.argv[1:]\n"
           "runpy.run_module('attncourse.grading.child', run_name='__main__')\n")


class Sandbox:
    """One learner's child process (restarted as needed). Use as a context manager."""

    def __init__(self, limits: Limits = Limits(), *, hidden_paths: list[str] = (), debug: bool = False):
        self.limits = limits
        self.debug = debug
        self.hidden_paths = [os.path.realpath(p) for p in hidden_paths]
        self.proc: subprocess.Popen | None = None
        self.workdir: str | None = None
        self.confinement: dict = {}
        self.program: dict | None = None     # the last load request (replayed on restart)
        self.load_report: dict | None = None
        self.strikes: dict[str, list[str]] = {}
        self.restarts = 0
        self.started_at = time.monotonic()
        self._buf = b""
        self._ready = False
        self._known_children: set[int] = set()
        _set_subreaper()

    # -- lifecycle
    def start(self) -> None:
        """Spawn the child; returns at once (torch imports there while the parent works)."""
        self._known_children = _our_children()
        self.workdir = tempfile.mkdtemp(prefix="attncourse-sandbox-")
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        import attncourse

        root = os.path.dirname(os.path.dirname(os.path.abspath(attncourse.__file__)))
        config = {"memory_mb": self.limits.memory_mb, "cpu_seconds": self.limits.cpu_seconds,
                  "confine": self.limits.confine, "read_paths": _read_paths(self.hidden_paths),
                  "write_paths": [self.workdir]}
        env = {"PATH": "/usr/bin:/bin", "HOME": self.workdir, "TMPDIR": self.workdir, "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg", "MPLCONFIGDIR": self.workdir}
        cmd = [sys.executable, "-I", "-B", "-c", _LAUNCH.format(root=root), str(req_r), str(resp_w),
               json.dumps(config)]
        err = None if self.debug else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         cwd=self.workdir, env=env, pass_fds=(req_r, resp_w),
                                         start_new_session=True, close_fds=True)
        finally:
            os.close(req_r)
            os.close(resp_w)
        self._req, self._resp = req_w, resp_r
        os.set_blocking(self._resp, False)
        self._buf = b""
        self._ready = False

    def _wait_ready(self) -> None:
        if self._ready:
            return
        header, _ = self._receive(self.limits.startup_timeout, "start")
        if header.get("op") != "ready":
            raise SandboxError("protocol", "the sandbox did not start properly")
        self.confinement = header.get("confinement", {}) if isinstance(header.get("confinement"), dict) else {}
        self._ready = True

    def stop(self) -> None:
        if self.proc is not None:
            for fd in (self._req, self._resp):
                try:
                    os.close(fd)
                except OSError:
                    pass
            kill_tree(self.proc.pid, self._known_children)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self._ready = False

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()
        self._wait_ready()
        if self.program is not None:
            self._send(self.program)
            while True:
                header, _ = self._receive(self.limits.startup_timeout, "reload")
                if header.get("op") == "loaded":
                    break

    # -- messages
    def _send(self, header: dict, blobs=()) -> None:
        data = memoryview(wire.pack(header, list(blobs)))
        deadline = time.monotonic() + max(self.limits.call_timeout, 5)
        os.set_blocking(self._req, False)
        while data:
            try:
                n = os.write(self._req, data[: 1 << 20])
                data = data[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SandboxError("timeout", "the sandbox stopped reading its input") from None
                select.select([], [self._req], [], 0.05)
            except (BrokenPipeError, OSError):
                raise SandboxError("crash", "the sandbox process ended") from None

    def _receive(self, timeout: float, what: str) -> tuple[dict, list[bytes]]:
        deadline = time.monotonic() + timeout
        limit = self.limits.max_answer_mb << 20
        while True:
            if len(self._buf) >= 8:
                (n,) = struct.unpack(">Q", self._buf[:8])
                if n > limit:
                    raise SandboxError("protocol", f"the answer was larger than {self.limits.max_answer_mb} MiB")
                if len(self._buf) >= 8 + n:
                    body, self._buf = self._buf[8:8 + n], self._buf[8 + n:]
                    try:
                        return wire.unpack(body)
                    except wire.WireError as exc:
                        raise SandboxError("protocol", f"malformed answer from the sandbox ({exc})") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError("timeout", f"no answer within {timeout:g} s")
            r, _, _ = select.select([self._resp], [], [], min(left, 0.5))
            if r:
                try:
                    chunk = os.read(self._resp, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    code = self.proc.poll() if self.proc else None
                    if code is None:
                        try:
                            code = self.proc.wait(timeout=1)
                        except subprocess.TimeoutExpired:
                            code = None
                    raise SandboxError("crash", _exit_text(code))
                self._buf += chunk
            elif self.proc is not None and self.proc.poll() is not None and not r:
                # the child is gone; drain what is left before reporting
                try:
                    chunk = os.read(self._resp, 1 << 20)
                except (BlockingIOError, OSError):
                    chunk = b""
                if chunk:
                    self._buf += chunk
                    continue
                raise SandboxError("crash", _exit_text(self.proc.returncode))

    # -- the two operations
    def load(self, program: dict) -> dict:
        """Run the setup and exercise cells; returns ``{cell key: status}``.

        A cell that hangs or ends the process is reported (``{"ok": False, "fatal": ...}``)
        and left out of a fresh child, so the remaining cells still load.
        """
        fatal: dict = {}
        while True:
            if self.proc is None:
                self.start()
            self._wait_ready()
            todo = dict(program, cells=[c for c in program["cells"] if c["key"] not in fatal])
            self._send(todo)
            current = None
            try:
                while True:
                    header, _ = self._receive(self.limits.call_timeout + 5, "load")
                    op = header.get("op")
                    if op == "cell":
                        current = header.get("key")
                    elif op == "loaded":
                        got = header.get("cells", {})
                        report = dict(fatal)
                        for c in todo["cells"]:
                            st = got.get(c["key"]) if isinstance(got, dict) else None
                            report[c["key"]] = st if isinstance(st, dict) else {"ok": False, "error": {
                                "type": "GraderError", "message": "no status", "line": None}}
                        self.program, self.load_report = todo, report
                        return report
            except SandboxError as exc:
                if current is None or current in fatal:
                    raise
                what = ("did not finish within the time limit" if exc.kind == "timeout"
                        else "ended the sandbox process" if exc.kind == "crash" else "broke the sandbox protocol")
                fatal[current] = {"ok": False, "fatal": what, "detail": str(exc)}
                self.stop()  # a fresh child runs the remaining cells without this one
                self.restarts += 1

    def call(self, exercise: str, args=(), kwargs=None, *, grad_wrt=None, grad_output=None) -> CallOutcome:
        """Call the learner's function of ``exercise``; raises :class:`SandboxError` if it hangs/crashes."""
        strikes = self.strikes.get(exercise, [])
        if len(strikes) >= self.limits.max_strikes:
            raise SandboxError("skipped", f"not run: this function already {strikes[0]} "
                                          f"{len(strikes)} times in earlier tests")
        if time.monotonic() - self.started_at > self.limits.total_timeout:
            raise SandboxError("budget", f"not run: the grading time limit for this submission "
                                         f"({self.limits.total_timeout:g} s) was reached")
        if self.proc is None or not self._ready:
            if self.proc is None:
                self._restart()
            else:
                self._wait_ready()
        blobs: list[bytes] = []
        header = {"op": "call", "exercise": exercise,
                  "args": [wire.encode_value(a, blobs) for a in args],
                  "kwargs": {k: wire.encode_value(v, blobs) for k, v in (kwargs or {}).items()}}
        if grad_wrt is not None:
            header["grad"] = {"wrt": list(grad_wrt), "grad_output": wire.encode_value(grad_output, blobs)}
        try:
            self._send(header, blobs)
            answer, ablobs = self._receive(self.limits.call_timeout, "call")
            if answer.get("op") != "result":
                raise SandboxError("protocol", "the sandbox answered out of turn")
            return self._outcome(answer, ablobs)
        except SandboxError as exc:
            if exc.kind in ("timeout", "crash", "protocol"):
                label = {"timeout": f"timed out (over {self.limits.call_timeout:g} s)",
                         "crash": "ended the sandbox process", "protocol": "broke the sandbox protocol"}[exc.kind]
                self.strikes.setdefault(exercise, []).append(label)
                self.stop()  # the next call starts a fresh child
            raise

    @staticmethod
    def _outcome(answer: dict, blobs: list[bytes]) -> CallOutcome:
        violations = answer.get("violations", [])
        if not isinstance(violations, list):
            violations = ["(tampered)"]
        violations = [str(v)[:120] for v in violations]
        if answer.get("ok") is True:
            try:
                value = wire.decode_value(answer.get("value"), blobs)
                grads = None
                if "grads" in answer:
                    if not isinstance(answer["grads"], list):
                        raise wire.WireError("malformed gradients")
                    grads = [wire.decode_value(g, blobs) for g in answer["grads"]]
            except wire.WireError as exc:
                raise SandboxError("protocol", f"malformed answer from the sandbox ({exc})") from None
            elapsed = answer.get("elapsed", 0.0)
            return CallOutcome(True, value, grads, violations=violations,
                               elapsed=float(elapsed) if isinstance(elapsed, (int, float)) else 0.0)
        error = answer.get("error")
        if not isinstance(error, dict):
            error = None
        gp = answer.get("grad_problem")
        return CallOutcome(False, error=error, grad_problem=str(gp)[:300] if gp else None, violations=violations)


def _exit_text(code) -> str:
    if code is None:
        return "the sandbox process ended"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGXCPU": " (CPU-time limit)", "SIGKILL": " (killed, e.g. out of memory)",
                "SIGSEGV": " (crash, e.g. out of memory)", "SIGXFSZ": " (file-size limit)"}.get(name, "")
        return f"the sandbox process was ended by {name}{hint}"
    return f"the sandbox process exited with status {code}"
