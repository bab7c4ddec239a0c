"""Parent side of the sandbox: start the child, load the learner's cells, make calls.

The learner's code never runs in this process. :class:`Sandbox` runs ``child.py`` in a new
session, with ``python -I``, a scrubbed environment, a fresh temporary working directory and
its own limits (see :mod:`attncourse.grading.confine`). Requests and answers travel over two
dedicated pipes (stdout/stderr go to /dev/null), tensors by value (:mod:`attncourse.grading.wire`).

**Starting children.** On Linux a *zygote* (:class:`Zygote`, one per grading process and
environment) imports torch once and forks every child; the child then confines itself. A
restart costs a ``fork`` and replaying the cells, not a new interpreter importing torch
(seconds on a busy machine). Elsewhere, or if the zygote cannot fork, each child is spawned.

**A bounded worst case.** A call that runs past ``call_timeout``, ends the child, or runs out
of memory is a *strike* against that exercise's function: the child is killed (with
everything it started, :func:`kill_tree`) and the next call gets a fresh child with the same
cells. After ``max_strikes`` strikes the function's remaining tests fail at once. On top of
that, a submission has ``total_timeout`` seconds of sandbox time, counted from the moment its
first child is ready (so the machine's start-up time is never charged to the learner): loading
cells, restarts and calls all stop at that deadline, and every later call fails at once. So no
submission keeps the grader longer than ``total_timeout`` plus the start-up, whatever it does.
"""
from __future__ import annotations

import atexit
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import site
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from attncourse.grading import wire


@dataclass(frozen=True)
class Limits:
    """Per-submission sandbox limits (CLI: ``--timeout``, ``--memory``, ``--cpu-time``, ``--total-timeout``).

    The defaults fit Gradescope's default autograder container (768 MB of memory, see
    ``book/instructors.md``): the grader (~250 MiB resident) plus a sandbox whose address space
    is capped at ``memory_mb`` (torch alone maps ~625 MiB of it, ~225 MiB resident) stay below
    it, so learner code that allocates without end is stopped by the limit (a ``MemoryError``,
    which counts as a strike), not by the container's OOM killer.
    """
    call_timeout: float = 10.0      # wall seconds per call (and per cell at load time)
    memory_mb: int = 960            # address space of the child (torch alone maps ~625 MiB)
    cpu_seconds: int = 120          # CPU seconds per child process (a restart gets a fresh budget)
    startup_timeout: float = 90.0   # the first start: importing torch on a busy machine
    total_timeout: float = 50.0     # wall seconds of sandbox time per submission (a hard deadline)
    max_strikes: int = 2            # timeouts/crashes/out-of-memory of one function before it fails fast
    max_answer_mb: int = 64         # largest answer accepted from the child
    confine: bool = True            # seccomp / landlock / capability drop where available
    zygote: bool = True             # fork children from a zygote (Linux); False: spawn each one


class SandboxError(Exception):
    """The child did not answer properly.

    ``kind``: 'timeout', 'crash', 'protocol', 'oom' (strikes), 'budget' (the submission's time
    is up), 'skipped' (the function struck out earlier) or 'startup' (the first child could not
    start: the machine's or the configuration's fault, never the learner's).
    """

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


def _read_paths(hidden: list[str], extra=()) -> list[str]:
    """Directories the child may read after start-up: Python, its packages, attncourse (and ``extra``)."""
    import attncourse

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             "/usr", "/lib", "/lib64", "/bin", "/etc", "/proc/cpuinfo", "/sys/devices/system/cpu",
             "/dev/null", "/dev/urandom", "/dev/zero",
             os.path.dirname(os.path.abspath(attncourse.__file__)), *extra}
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


# The child imports the same attncourse as this process (the folder above it goes first on its path).
_LAUNCH = ("import sys, runpy\n"
           "sys.path.insert(0, {root!r})\n"
           "sys.argv = ['child'] + sys.argv[1:]\n"
           "runpy.run_module('attncourse.grading.child', run_name='__main__')\n")


def _package_root() -> str:
    import attncourse

    return os.path.dirname(os.path.dirname(os.path.abspath(attncourse.__file__)))


def base_env(extra: dict | None = None) -> dict[str, str]:
    """The child's whole environment (``HOME``/``TMPDIR`` are set per child to its own folder)."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    return env


def _vm_kib(pid: int, field_name: str) -> int:
    """``VmHWM``/``VmRSS``/… of a process in KiB (0 if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# ----------------------------------------------------------------------------- zygote
class Zygote:
    """A process that imported torch once and forks sandbox children (see ``child.zygote``).

    One per grading process and child environment, started on first use and kept for the
    next submissions; it runs no learner code. ``spawn`` returns the new child's pid.
    """

    def __init__(self, env: dict[str, str], debug: bool = False):
        self.env, self.debug = env, debug
        self.home = tempfile.mkdtemp(prefix="attncourse-zygote-")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        err = None if debug else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", _LAUNCH.format(root=_package_root()), "zygote",
                 str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=self.home,
                env=dict(env, HOME=self.home, TMPDIR=self.home, MPLCONFIGDIR=self.home),
                pass_fds=(theirs.fileno(),), start_new_session=True, close_fds=True)
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self.ready = False
        self.rss_kib = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _recv(self, timeout: float) -> dict:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 16)
        except (socket.timeout, OSError) as exc:
            raise SandboxError("startup", f"the zygote did not answer ({type(exc).__name__})") from None
        if not data:
            raise SandboxError("startup", "the zygote ended")
        try:
            return json.loads(data)
        except ValueError:
            raise SandboxError("startup", "the zygote answered nonsense") from None

    def wait_ready(self, timeout: float) -> None:
        if not self.ready:
            msg = self._recv(timeout)
            if msg.get("op") != "ready":
                raise SandboxError("startup", "the zygote did not start properly")
            self.ready = True
            self.rss_kib = _vm_kib(self.pid, "VmRSS")

    def spawn(self, request: dict, fds: tuple[int, int], timeout: float = 10.0) -> int:
        try:
            socket.send_fds(self.sock, [json.dumps(dict(request, op="spawn")).encode()], list(fds))
        except OSError as exc:
            raise SandboxError("startup", f"the zygote is gone ({exc})") from None
        answer = self._recv(timeout)
        if not isinstance(answer.get("pid"), int):
            raise SandboxError("startup", f"the zygote could not fork ({answer.get('error')})")
        return answer["pid"]

    def exit_code(self, pid: int, timeout: float = 1.0):
        """How a child this zygote forked ended (None if unknown or still running)."""
        try:
            self.sock.send(json.dumps({"op": "status", "pid": pid, "timeout": timeout}).encode())
            answer = self._recv(timeout + 2)
        except (OSError, SandboxError):
            return None
        return answer.get("code") if isinstance(answer.get("code"), int) else None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.kill()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.home, ignore_errors=True)


_ZYGOTES: dict[tuple, Zygote] = {}
_ZYGOTE_OWNER = [os.getpid()]


def zygote_for(env: dict[str, str], debug: bool) -> Zygote:
    """The zygote of this process for ``env`` (started on first use, restarted if it died)."""
    if _ZYGOTE_OWNER[0] != os.getpid():  # inherited through fork: not ours to use
        _ZYGOTES.clear()
        _ZYGOTE_OWNER[0] = os.getpid()
    key = (tuple(sorted(env.items())), debug)
    z = _ZYGOTES.get(key)
    if z is None or not z.alive():
        if z is not None:
            z.close()
        z = _ZYGOTES[key] = Zygote(env, debug)
    return z


def close_zygotes() -> None:
    for z in list(_ZYGOTES.values()):
        z.close()
    _ZYGOTES.clear()


atexit.register(close_zygotes)


def peak_rss_mib() -> int:
    """Peak resident memory of this (grading) process so far, in MiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib / 1024) if sys.platform.startswith("linux") else int(kib / 2**20)


# ----------------------------------------------------------------------------- the sandbox
def _is_oom(error: dict | None) -> bool:
    """A learner exception that means "out of memory" (Python's, or torch's allocator)."""
    if not isinstance(error, dict):
        return False
    msg = str(error.get("message", ""))
    return error.get("type") == "MemoryError" or "can't allocate memory" in msg or "DefaultCPUAllocator" in msg


_STRIKE = {"timeout": "timed out", "crash": "ended the sandbox process", "protocol": "broke the sandbox protocol",
           "oom": "ran out of memory"}


class Sandbox:
    """One learner's child process (restarted as needed). Use as a context manager.

    ``env`` and ``read_paths`` extend the child's environment and the folders it may read
    (a chapter's ``SANDBOX`` table in its hidden tests, e.g. for Triton's interpreter).
    """

    def __init__(self, limits: Limits = Limits(), *, hidden_paths: list[str] = (), debug: bool = False,
                 env: dict | None = None, read_paths=()):
        self.limits = limits
        self.debug = debug
        self.hidden_paths = [os.path.realpath(p) for p in hidden_paths]
        self.env = base_env(env)
        self.extra_read = [str(p) for p in read_paths]
        self.pid: int | None = None
        self._popen: subprocess.Popen | None = None
        self._zygote: Zygote | None = None
        self._pending: tuple | None = None   # (request, fds) of a child the zygote is still to fork
        self.workdir: str | None = None
        self.confinement: dict = {}
        self.program: dict | None = None     # the cells that loaded (replayed on restart)
        self.load_report: dict | None = None
        self.strikes: dict[str, list[str]] = {}
        self.dead: dict[str, str] = {}       # exercise -> why its cell cannot run any more
        self.restarts = 0
        self.started_children = 0
        self.created_at = time.monotonic()
        self.budget_start: float | None = None
        self.peak_rss_kib = 0
        self._buf = bytearray()
        self._ready = False
        self._known_children: set[int] = set()
        _set_subreaper()

    # -- time
    def remaining(self) -> float:
        """Seconds of this submission's sandbox time left (all of it until the first child is ready)."""
        if self.budget_start is None:
            return self.limits.total_timeout
        return self.limits.total_timeout - (time.monotonic() - self.budget_start)

    def timing(self) -> dict:
        """Seconds until the first child was ready (start-up, not charged) and of sandbox time since."""
        if self.budget_start is None:
            return {"startup_s": None, "sandbox_s": 0.0}
        return {"startup_s": round(self.budget_start - self.created_at, 3),
                "sandbox_s": round(time.monotonic() - self.budget_start, 3)}

    def _budget_error(self) -> SandboxError:
        return SandboxError("budget", f"not run: the grading time limit for this submission "
                                      f"({self.limits.total_timeout:g} s) was reached")

    # -- lifecycle
    def start(self) -> None:
        """Start a child; returns at once (torch imports, or the zygote forks, while the parent works)."""
        self._known_children = _our_children()
        self.workdir = tempfile.mkdtemp(prefix="attncourse-sandbox-")
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        config = {"memory_mb": self.limits.memory_mb, "cpu_seconds": self.limits.cpu_seconds,
                  "confine": self.limits.confine, "read_paths": _read_paths(self.hidden_paths, self.extra_read),
                  "write_paths": [self.workdir]}
        env = dict(self.env, HOME=self.workdir, TMPDIR=self.workdir, MPLCONFIGDIR=self.workdir)
        self._req, self._resp = req_w, resp_r
        os.set_blocking(self._resp, False)
        self._buf = bytearray()
        self._ready = False
        self.started_children += 1
        if self.limits.zygote and sys.platform.startswith("linux"):
            try:
                self._zygote = zygote_for(self.env, self.debug)
                self._known_children.add(self._zygote.pid)
                self._pending = ({"config": config, "env": env, "workdir": self.workdir, "debug": self.debug},
                                 (req_r, resp_w))
                return
            except OSError:
                self._zygote = None
        self._spawn(config, env, req_r, resp_w)

    def _spawn(self, config, env, req_r, resp_w) -> None:
        cmd = [sys.executable, "-I", "-B", "-c", _LAUNCH.format(root=_package_root()), str(req_r), str(resp_w),
               json.dumps(config)]
        err = None if self.debug else subprocess.DEVNULL
        try:
            self._popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                           cwd=self.workdir, env=env, pass_fds=(req_r, resp_w),
                                           start_new_session=True, close_fds=True)
            self.pid = self._popen.pid
        finally:
            os.close(req_r)
            os.close(resp_w)

    def _wait_ready(self, timeout: float) -> None:
        """Wait until the child is confined and ready (fork it first if the zygote is to)."""
        if self._ready:
            return
        deadline = time.monotonic() + timeout
        if self._pending is not None:
            request, fds = self._pending
            self._pending = None
            try:
                self._zygote.wait_ready(timeout)
                self.pid = self._zygote.spawn(request, fds, timeout=max(deadline - time.monotonic(), 5))
                for fd in fds:
                    os.close(fd)
            except SandboxError:
                # no zygote after all: spawn this child the classic way (it imports torch itself)
                self._zygote = None
                self._spawn(request["config"], request["env"], *fds)
        header, _ = self._receive(max(deadline - time.monotonic(), 0.001), "start")
        if header.get("op") != "ready":
            raise SandboxError("protocol", "the sandbox did not start properly")
        self.confinement = header.get("confinement", {}) if isinstance(header.get("confinement"), dict) else {}
        self._ready = True
        if self.budget_start is None:
            self.budget_start = time.monotonic()

    def _child_exit_code(self, wait: float = 1.0):
        if self._popen is not None:
            try:
                return self._popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                return None
        if self._zygote is not None and self.pid is not None:
            return self._zygote.exit_code(self.pid, wait)
        return None

    def stop(self) -> None:
        if self._pending is not None:
            for fd in self._pending[1]:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._pending = None
        if self.pid is not None or self._popen is not None:
            if self.pid is not None:  # before closing its pipes: then it exits and /proc forgets
                self.peak_rss_kib = max(self.peak_rss_kib, _vm_kib(self.pid, "VmHWM"))
            for fd in (self._req, self._resp):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.pid is not None:
                kill_tree(self.pid, self._known_children)
            if self._popen is not None:
                try:
                    self._popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self.pid, self._popen = None, None
        elif self.workdir is not None:  # started, never forked: the pipes are ours to close
            for fd in (self._req, self._resp):
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self._ready = False

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def memory(self) -> dict:
        """Peak resident memory (MiB) of the children so far, of the zygote, and of this process."""
        if self.pid is not None:
            self.peak_rss_kib = max(self.peak_rss_kib, _vm_kib(self.pid, "VmHWM"))
        return {"sandbox": self.peak_rss_kib // 1024,
                "zygote": (self._zygote.rss_kib // 1024) if self._zygote is not None else 0,
                "grader": peak_rss_mib()}

    def _restart(self) -> None:
        """A fresh child with the cells that loaded; a cell that now fails is dropped (see ``dead``)."""
        self.stop()
        self.restarts += 1
        if self.program is None:
            self.start()
            self._wait_ready(min(self.limits.startup_timeout, max(self.remaining(), 0.001)))
            return
        program = self.program
        report = self._run_cells(program, first=False)
        if self.remaining() <= 0:
            raise self._budget_error()
        for key, st in report.items():
            if isinstance(st, dict) and st.get("fatal"):
                ex = next((c.get("exercise") for c in program["cells"] if c["key"] == key), None)
                if ex:
                    self.dead[ex] = (f"not run: the exercise cell {st['fatal']} when the grader restarted "
                                     "the sandbox, so the function could not be defined again")

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
                (n,) = struct.unpack_from(">Q", self._buf, 0)
                if n > limit:
                    raise SandboxError("protocol", f"the answer was larger than {self.limits.max_answer_mb} MiB")
                if len(self._buf) >= 8 + n:
                    body = bytes(self._buf[8:8 + n])
                    del self._buf[:8 + n]
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
                    raise SandboxError("crash", _exit_text(self._child_exit_code()))
                self._buf += chunk
            elif self._popen is not None and self._popen.poll() is not None:
                # the child is gone; drain what is left before reporting
                try:
                    chunk = os.read(self._resp, 1 << 20)
                except (BlockingIOError, OSError):
                    chunk = b""
                if chunk:
                    self._buf += chunk
                    continue
                raise SandboxError("crash", _exit_text(self._popen.returncode))

    # -- the two operations
    def load(self, program: dict) -> dict:
        """Run the setup and exercise cells; returns ``{cell key: status}``.

        A cell that hangs or ends the process is reported (``{"ok": False, "fatal": ...}``)
        and left out of a fresh child, so the remaining cells still load. If the very first
        child cannot start, :class:`SandboxError` of kind ``startup`` is raised: no learner
        code has run, so it is the machine's or the configuration's fault.
        """
        report = self._run_cells(program, first=True)
        self.load_report = report
        return report

    def _run_cells(self, program: dict, *, first: bool) -> dict:
        fatal: dict = {}
        while True:
            if self.pid is None and self._pending is None:
                self.start()
            if first and self.budget_start is None:
                try:
                    self._wait_ready(self.limits.startup_timeout)
                except SandboxError as exc:
                    self.stop()
                    raise SandboxError("startup", f"the sandbox could not start ({exc})") from None
            else:
                left = self.remaining()
                if left <= 0:
                    raise self._budget_error()
                self._wait_ready(min(self.limits.startup_timeout, left))
            todo = dict(program, cells=[c for c in program["cells"] if c["key"] not in fatal])
            self._send(todo)
            current = None
            try:
                while True:
                    left = self.remaining()
                    if left <= 0:
                        raise SandboxError("budget", "out of time")
                    header, _ = self._receive(min(self.limits.call_timeout + 5, left), "load")
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
                        for k, v in got.items() if isinstance(got, dict) else ():
                            if k.startswith("__") and k not in report:
                                report[k] = v
                        self.program = todo
                        return report
            except SandboxError as exc:
                if self.remaining() <= 0 or exc.kind == "budget":
                    # out of time: the cell running now and every cell after it did not load
                    self.stop()
                    limit = f"{self.limits.total_timeout:g} s"
                    report, started = dict(fatal), current is None
                    for c in todo["cells"]:
                        if c["key"] == current:
                            started = True
                            report[c["key"]] = {"ok": False, "fatal": f"did not finish before the grading time "
                                                                      f"limit ({limit}) was reached"}
                        elif started:
                            report[c["key"]] = {"ok": False, "fatal": f"was not run: the grading time limit "
                                                                      f"({limit}) had been reached"}
                        else:
                            report[c["key"]] = {"ok": True, "defined": True}
                    self.program = None
                    return report
                if current is None or current in fatal:
                    raise
                what = ("did not finish within the time limit" if exc.kind == "timeout"
                        else "ended the sandbox process" if exc.kind == "crash" else "broke the sandbox protocol")
                fatal[current] = {"ok": False, "fatal": what, "detail": str(exc)}
                self.stop()  # a fresh child runs the remaining cells without this one
                self.restarts += 1

    def call(self, exercise: str, args=(), kwargs=None, *, grad_wrt=None, grad_output=None) -> CallOutcome:
        """Call the learner's function of ``exercise``; raises :class:`SandboxError` if it cannot answer."""
        strikes = self.strikes.get(exercise, [])
        if len(strikes) >= self.limits.max_strikes:
            kinds = ", ".join(dict.fromkeys(strikes))
            raise SandboxError("skipped", f"not run: this function already failed {len(strikes)} times in "
                                          f"earlier tests ({kinds})")
        if exercise in self.dead:
            raise SandboxError("skipped", self.dead[exercise])
        if self.remaining() <= 0:
            raise self._budget_error()
        try:
            if self.pid is None and self._pending is None:
                self._restart()
            else:
                self._wait_ready(min(self.limits.startup_timeout, max(self.remaining(), 0.001)))
        except SandboxError as exc:
            self.stop()
            if exc.kind == "budget" or self.remaining() <= 0:
                raise self._budget_error() from None
            if exc.kind in _STRIKE:  # the cells could not be replayed: bounded like a failed call
                self.strikes.setdefault(exercise, []).append(_STRIKE[exc.kind])
            raise
        if exercise in self.dead:
            raise SandboxError("skipped", self.dead[exercise])
        blobs: list[bytes] = []
        header = {"op": "call", "exercise": exercise,
                  "args": [wire.encode_value(a, blobs) for a in args],
                  "kwargs": {k: wire.encode_value(v, blobs) for k, v in (kwargs or {}).items()}}
        if grad_wrt is not None:
            header["grad"] = {"wrt": list(grad_wrt), "grad_output": wire.encode_value(grad_output, blobs)}
        left = self.remaining()
        timeout = min(self.limits.call_timeout, left)
        try:
            self._send(header, blobs)
            answer, ablobs = self._receive(timeout, "call")
            if answer.get("op") != "result":
                raise SandboxError("protocol", "the sandbox answered out of turn")
            outcome = self._outcome(answer, ablobs)
        except SandboxError as exc:
            if exc.kind == "timeout" and timeout < self.limits.call_timeout:
                self.stop()  # cut by the submission's deadline, not by its own limit: no strike
                raise self._budget_error() from None
            if exc.kind in _STRIKE:
                self.strikes.setdefault(exercise, []).append(
                    f"timed out (over {self.limits.call_timeout:g} s)" if exc.kind == "timeout" else _STRIKE[exc.kind])
                self.stop()  # the next call starts a fresh child
            raise
        if not outcome.ok and _is_oom(outcome.error):
            # out of memory: a strike, and a fresh child (memory the function kept must not hurt others)
            self.strikes.setdefault(exercise, []).append(_STRIKE["oom"])
            self.stop()
        return outcome

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
