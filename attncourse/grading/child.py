"""The sandboxed child: runs the learner's cells and answers calls. Started by ``sandbox.py``.

This module is the only grading code that runs next to learner code, so it trusts nothing
it gets back from that code and the parent trusts nothing it gets back from this process:
every answer is re-validated by the parent (type, shape, dtype, values).

A child starts in one of two ways. Usually a **zygote** (``child.py zygote CTRL_FD``, see
:func:`zygote`) that imported torch once forks it, so a restart after a timeout or a crash
costs a ``fork``, not a new interpreter; otherwise it is spawned as
``child.py REQ_FD RESP_FD CONFIG_JSON`` and imports torch itself. Either way it confines itself
before any learner code runs.

Life of a child::

    start: apply limits and confinement (import torch and attncourse)  -> {"op": "ready"}
    load:  install tripwires, run the setup cell and each exercise cell
           (a {"op": "cell"} note before each, so the parent can blame a cell that hangs
           or ends the process)                                        -> {"op": "loaded"}
    call:  run one learner function on tensors sent by value            -> {"op": "result"}

The request channel is fd ``REQ``; answers go to fd ``RESP``. stdout/stderr are not read by
the parent, so a learner who prints megabytes only fills /dev/null.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
import types

from attncourse.grading import confine  # stdlib-only module

# Set by serve(): the protocol fds and the settings (child.py REQ_FD RESP_FD CONFIG_JSON when spawned).
REQ = RESP = -1
CONFIG: dict = {}
_confinement: dict = {}
torch = wire = None  # imported by _import_torch(), before any learner code


def _import_torch() -> None:
    """What every child needs before learner code: torch (one thread), the reference, the wire."""
    global torch, wire
    import torch as _torch

    _torch.set_num_threads(1)
    import attncourse  # noqa: F401
    import attncourse.core  # noqa: F401
    import attncourse.masks  # noqa: F401
    import torch.nn.functional  # noqa: F401
    import importlib
    import pkgutil

    import attncourse.checks
    from attncourse.grading import wire as _wire

    # every reference module and every chapter's checks, so that the tripwires cover them all
    # (about 0.2 s, once per zygote)
    for short in REFERENCE_MODULES:
        importlib.import_module(f"attncourse.{short}")
    for info in pkgutil.iter_modules(attncourse.checks.__path__):
        importlib.import_module(f"attncourse.checks.{info.name}")

    torch, wire = _torch, _wire


def _confine_self(forked: bool) -> None:
    """Limits and confinement, applied by this process to itself before any learner code runs."""
    limits = confine.set_limits(memory_mb=CONFIG["memory_mb"], cpu_seconds=CONFIG["cpu_seconds"],
                                file_mb=CONFIG.get("file_mb", 64))
    _confinement.update(start="fork" if forked else "spawn", limits=limits)
    if not forked:  # a spawned child imports torch under its limits; a forked one has it already
        _import_torch()
    _confinement["oom_first"] = confine.prefer_oom_kill()
    if CONFIG.get("confine", True):
        _confinement["capabilities_dropped"] = confine.drop_capabilities()
        _confinement["seccomp"] = confine.install_seccomp()
        _confinement["landlock_abi"] = confine.install_landlock(CONFIG.get("read_paths", []),
                                                                CONFIG.get("write_paths", []))


def serve(req: int, resp: int, config: dict, *, forked: bool) -> None:
    """Confine this process, then answer requests on ``req``/``resp`` until told to stop."""
    global REQ, RESP, CONFIG
    REQ, RESP, CONFIG = req, resp, config
    _confine_self(forked)
    main()


def _send(header, blobs=()):
    wire.write_message(RESP, header, list(blobs))


# ----------------------------------------------------------------------------- tripwires
_current = {"exercise": None}
_forbidden: dict[str, set[str]] = {}  # dotted name -> exercises that may not call it
_violations: list[str] = []


def _resolve(dotted):
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        modname = ".".join(parts[:i])
        obj = sys.modules.get(modname)
        if obj is None:
            try:
                obj = __import__(modname, fromlist=["_"])
            except Exception:
                continue
        try:
            for p in parts[i:-1]:
                obj = getattr(obj, p)
            return obj, parts[-1], getattr(obj, parts[-1])
        except Exception:
            return None
    return None


# The course's reference code: while an exercise runs, a call into any of these modules is a
# violation ("Not allowed in any exercise: attncourse"), whether or not FORBIDDEN lists it, and
# so is a call to one of the public checks' ``reference_*`` answers.
REFERENCE_MODULES = ("alibi", "bench", "compare", "core", "data", "flash", "gqa", "kvcache", "llama", "local",
                     "masks", "model", "multihead", "positions", "rope", "sparse")
_wrapped: dict[int, set[str]] = {}     # id(wrapper) -> exercises it records calls for ("*": every exercise)
_originals: dict[int, object] = {}     # id(wrapper) -> the original (never an attribute of the wrapper)


def _from_the_package(frame) -> bool:
    name = str(frame.f_globals.get("__name__", ""))
    return name == "attncourse" or name.startswith("attncourse.")


def _make_tripwire(original, dotted: str, who: set[str]):
    """A wrapper that records a call made while an exercise runs: any call from an exercise in
    ``who``; with ``"*"`` in ``who``, also a call from any other exercise, unless it comes from
    inside the course's package (the helpers a notebook may use, such as
    ``attncourse.triton_support``, call reference code themselves)."""
    def tripwire(*args, **kwargs):
        current = _current["exercise"]
        if current is not None and (current in who or ("*" in who and not _from_the_package(sys._getframe(1)))):
            _violations.append(dotted)
        return original(*args, **kwargs)
    tripwire.__name__ = getattr(original, "__name__", dotted.rsplit(".", 1)[-1])
    tripwire.__qualname__ = getattr(original, "__qualname__", tripwire.__name__)
    tripwire.__doc__ = getattr(original, "__doc__", None)
    _wrapped[id(tripwire)] = who
    _originals[id(tripwire)] = original
    return tripwire


def _bindings(originals: dict[int, object], modules) -> dict[int, list]:
    """``{id(original): [(namespace, name), ...]}``: where each original is bound, in one pass."""
    found: dict[int, list] = {}
    for mod in modules:
        try:
            items = list(vars(mod).items())
        except Exception:
            continue
        for k, v in items:
            if id(v) in originals and v is originals[id(v)]:
                found.setdefault(id(v), []).append((mod, k))
    return found


def _wrap(plan: dict[int, tuple], modules) -> None:
    """``plan``: ``{id(original): (original, dotted, [(owner, attr)], who)}``; rebind each wrapper
    wherever its original is bound in ``modules``, and where the plan says."""
    places = _bindings({k: v[0] for k, v in plan.items()}, modules)
    for key, (original, dotted, own, who) in plan.items():
        wrapper = _make_tripwire(original, dotted, who)
        for obj, name in own + places.get(key, []):
            try:
                setattr(obj, name, wrapper)
            except Exception:
                pass


def install_tripwires(forbidden: dict[str, list[str]]) -> None:
    """Replace each forbidden callable by a wrapper that records calls made by that exercise.

    The original is replaced wherever it is bound (``attncourse.attention`` and
    ``attncourse.core.attention`` are one object), so an import in the setup cell gets the
    wrapper too. The wrapper still calls the original: the result is scored as usual and the
    parent turns the recorded call into a failing test with a clear message. Then every function
    and method of the course's reference code records calls from every exercise.
    """
    plan: dict[int, tuple] = {}
    for dotted, exercises in forbidden.items():
        found = _resolve(dotted)
        if found is None:
            continue
        owner, attr, original = found
        if id(original) in _wrapped:
            _wrapped[id(original)].update(exercises)
        elif id(original) in plan:
            plan[id(original)][3].update(exercises)
        else:
            plan[id(original)] = (original, dotted, [(owner, attr)], set(exercises))
    _wrap(plan, list(sys.modules.values()))
    _wrap_reference_code()


def _wrap_reference_code() -> None:
    """Every function and method defined in the reference modules, and the checks' answers, for
    every exercise (``"*"``); one that FORBIDDEN already wrapped for some exercises gets ``"*"`` too."""
    package = [m for n, m in list(sys.modules.items()) if n == "attncourse" or n.startswith("attncourse.")]
    plan: dict[int, tuple] = {}

    def add(obj, dotted, own=()):
        if id(obj) in _wrapped:
            _wrapped[id(obj)].add("*")
        elif isinstance(obj, types.FunctionType):
            plan.setdefault(id(obj), (obj, dotted, list(own), {"*"}))

    def home(obj):                                          # the module that defined it (or its original)
        return getattr(_originals.get(id(obj), obj), "__module__", None)

    for short in REFERENCE_MODULES:
        mod = sys.modules.get(f"attncourse.{short}")
        for name, obj in list(vars(mod).items()) if mod else []:
            if isinstance(obj, type) and obj.__module__ == mod.__name__:
                for attr, fn in list(vars(obj).items()):
                    if not attr.startswith("__") or attr == "__call__":
                        add(fn, f"{mod.__name__}.{name}.{attr}", [(obj, attr)])
            elif home(obj) == mod.__name__:
                add(obj, f"{mod.__name__}.{name}")
    for mod in package:
        if mod.__name__.startswith("attncourse.checks."):
            for name, obj in list(vars(mod).items()):
                if name.startswith("reference_"):
                    add(obj, f"{mod.__name__}.{name}")
    _wrap(plan, package + [sys.modules.get("__main__")])


# ----------------------------------------------------------------------------- supplied references
_supplied: dict[str, dict[str, object]] = {}  # exercise -> {learner function name: reference}


def _supplied_reference(reference):
    """Wrap a reference the grader supplies in place of another exercise's function.

    While it runs, no exercise is "current", so calls it makes to forbidden functions (it *is*
    the reference) are never counted against the learner.
    """
    def supplied(*args, **kwargs):
        saved = _current["exercise"]
        _current["exercise"] = None
        try:
            return reference(*args, **kwargs)
        finally:
            _current["exercise"] = saved
    supplied.__name__ = getattr(reference, "__name__", "reference")
    supplied.__doc__ = getattr(reference, "__doc__", None)
    return supplied


def prepare_uses(uses: dict) -> list[str]:
    """Resolve ``{exercise: {name: dotted path}}``; returns the paths that could not be found."""
    missing = []
    for exercise, names in uses.items():
        for name, dotted in names.items():
            found = _resolve(dotted)
            if found is None or not callable(found[2]):
                missing.append(dotted)
                continue
            ref = _originals.get(id(found[2]), found[2])
            _supplied.setdefault(exercise, {})[name] = _supplied_reference(ref)
    return missing


# ----------------------------------------------------------------------------- learner code
_namespace: dict = {"__name__": "__main__", "__builtins__": __builtins__}
_functions: dict[str, types.FunctionType] = {}
_MISSING = object()


def _describe(exc: BaseException, filename_prefix="<cell") -> dict:
    line = None
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith(filename_prefix):
            line = frame.lineno
            break
    try:
        msg = str(exc)
    except Exception:
        msg = "(the exception's message could not be shown)"
    first = msg.strip().splitlines()[0] if msg.strip() else ""
    bases = [c.__name__[:60] for c in type(exc).__mro__ if c not in (object, BaseException)][:12]
    return {"type": type(exc).__name__[:60], "bases": bases, "message": _clip(_explain(first)), "line": line}


_IN_PLACE = re.compile(r"modified by an inplace operation: .*?, which is (output \d+ of \w+)")


def _explain(message: str) -> str:
    """Torch messages that learners meet often, said in the course's words."""
    found = _IN_PLACE.search(message)
    if found:
        return (f"the gradient could not be computed: a tensor that backward needs ({found.group(1)}) was changed "
                "in place. Write it out of place, e.g. with torch.where or masked_fill, instead of x[...] = ..., "
                "x += ... or x.fill_(...)")
    return message


def _clip(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters at a sentence or word boundary, marked with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    end = cut.rfind(". ")
    if end >= limit // 2:
        return cut[:end + 1]
    return cut[:cut.rfind(" ")].rstrip(" ,;:") + "…" if " " in cut else cut + "…"


def load(request: dict) -> None:
    missing = prepare_uses(request.get("uses", {}))  # before the tripwires wrap the references
    install_tripwires(request.get("forbidden", {}))
    report = {"__uses_missing__": missing} if missing else {}
    for cell in request["cells"]:
        key = cell["key"]
        _send({"op": "cell", "key": key})
        status = {"ok": True}
        try:
            code = compile(cell["source"], cell["filename"], "exec", dont_inherit=True)
            exec(code, _namespace)
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
            status = {"ok": False, "error": _describe(exc)}
        fn_name = cell.get("function")
        if fn_name:
            fn = _namespace.get(fn_name)
            if isinstance(fn, types.FunctionType) and fn.__code__.co_filename == cell["filename"]:
                _functions[cell["exercise"]] = fn
                status["defined"] = True
            else:
                status["defined"] = False
                status["found"] = (type(fn).__name__ if fn is not None else None)
                if isinstance(fn, types.FunctionType):
                    status["found"] = "function defined elsewhere"
        report[key] = status
    _send({"op": "loaded", "cells": report})


def call(request: dict, blobs: list[bytes]) -> None:
    exercise = request["exercise"]
    fn = _functions.get(exercise)
    args = [wire.decode_value(d, blobs) for d in request.get("args", [])]
    kwargs = {k: wire.decode_value(d, blobs) for k, d in request.get("kwargs", {}).items()}
    grad = request.get("grad")
    if grad:
        for i in grad["wrt"]:
            args[i] = args[i].detach().requires_grad_(True)
    del _violations[:]
    out_blobs: list[bytes] = []
    # Another exercise's function called by this one is the reference for the whole call, so
    # this exercise is graded on its own cell alone.
    swapped = {name: _namespace.get(name, _MISSING) for name in _supplied.get(exercise, {})}
    _namespace.update(_supplied.get(exercise, {}))
    start = time.perf_counter()
    _current["exercise"] = exercise
    try:
        if fn is None:
            raise RuntimeError("function not loaded")
        value = fn(*args, **kwargs)
        grads = None
        if grad:
            gout = wire.decode_value(grad["grad_output"], blobs)
            if type(value) is not torch.Tensor:
                raise _GradProblem("the result is not a torch.Tensor, so no gradient can flow")
            if not value.requires_grad:
                raise _GradProblem("the result does not depend on the inputs through autograd "
                                   "(did you call .detach(), .item(), .numpy() or build a new tensor?)")
            if value.shape != gout.shape:
                raise _GradProblem(f"the result has shape {tuple(value.shape)}, expected {tuple(gout.shape)}")
            inputs = [args[i] for i in grad["wrt"]]
            grads = torch.autograd.grad(value, inputs, gout.to(value.dtype), allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs)]
        elapsed = time.perf_counter() - start
        _current["exercise"] = None
        header = {"op": "result", "ok": True, "value": wire.encode_value(value, out_blobs),
                  "elapsed": elapsed, "violations": list(dict.fromkeys(_violations))}
        if grads is not None:
            header["grads"] = [wire.encode_value(g, out_blobs) for g in grads]
    except _GradProblem as exc:
        _current["exercise"] = None
        header = {"op": "result", "ok": False, "grad_problem": str(exc), "violations": list(dict.fromkeys(_violations))}
        out_blobs = []
    except BaseException as exc:  # noqa: BLE001 - learner code may raise anything, even SystemExit
        _current["exercise"] = None
        header = {"op": "result", "ok": False, "error": _describe(exc), "violations": list(dict.fromkeys(_violations))}
        out_blobs = []
    for name, old in swapped.items():
        if old is _MISSING:
            _namespace.pop(name, None)
        else:
            _namespace[name] = old
    _send(header, out_blobs)


class _GradProblem(Exception):
    pass


def main() -> None:
    _send({"op": "ready", "confinement": _confinement, "pid": os.getpid()})
    while True:
        try:
            msg = wire.read_message_blocking(REQ, CONFIG.get("max_request_bytes", 1 << 30))
        except Exception:
            os._exit(3)
        if msg is None:
            os._exit(0)
        request, blobs = msg
        op = request.get("op")
        if op == "load":
            load(request)
        elif op == "call":
            call(request, blobs)
        elif op == "exit":
            os._exit(0)


# ----------------------------------------------------------------------------- zygote
def zygote(ctrl_fd: int) -> None:
    """A fork server: import torch once, then fork a fresh child for every sandbox (re)start.

    Runs only trusted code: it never loads learner cells. It answers two requests on the
    control socket (a ``SOCK_SEQPACKET`` pair, one JSON message each): ``spawn`` (with the
    child's two protocol fds attached) forks a child that confines itself and serves them, and
    ``status`` reports how a child it forked ended. A restart then costs a ``fork`` instead of
    starting Python and importing torch again. It exits when the grader closes the socket.
    """
    import signal
    import socket

    confine.die_with_parent()
    _import_torch()
    ctrl = socket.socket(fileno=ctrl_fd)
    ended: dict[int, int] = {}

    def reap():
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ended[pid] = os.waitstatus_to_exitcode(status)

    def reply(obj):
        ctrl.send(json.dumps(obj).encode())

    signal.signal(signal.SIGCHLD, lambda *_: reap())  # no zombies between requests
    reply({"op": "ready", "pid": os.getpid(), "threads": len(os.listdir("/proc/self/task"))})
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(ctrl, 1 << 16, 4)
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)
        try:
            request = json.loads(data)
        except ValueError:
            os._exit(3)
        reap()
        if request.get("op") == "status":
            pid, deadline = int(request["pid"]), time.monotonic() + float(request.get("timeout", 1.0))
            while pid not in ended and time.monotonic() < deadline:
                time.sleep(0.01)
                reap()
            reply({"pid": pid, "code": ended.pop(pid, None)})
            continue
        if request.get("op") != "spawn" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            reply({"error": "bad request"})
            continue
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:  # forking a threaded process could copy a held lock: let the grader spawn
            for fd in fds:
                os.close(fd)
            reply({"error": f"the zygote has {threads} threads"})
            continue
        pid = os.fork()
        if pid == 0:
            try:
                ctrl.close()
                _forked_child(request, fds)
            finally:
                os._exit(4)
        for fd in fds:
            os.close(fd)
        reply({"pid": pid})


def _forked_child(request: dict, fds: list[int]) -> None:
    import signal
    import tempfile

    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    req, resp = fds
    if not request.get("debug"):
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    for name in os.listdir("/proc/self/fd"):  # nothing of the zygote's stays open
        fd = int(name)
        if fd > 2 and fd not in (req, resp):
            try:
                os.close(fd)
            except OSError:
                pass
    os.chdir(request["workdir"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None
    serve(req, resp, request["config"], forked=True)


if __name__ == "__main__":
    try:
        if sys.argv[1] == "zygote":
            zygote(int(sys.argv[2]))
        else:
            serve(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), forked=False)
    except BaseException:  # noqa: BLE001
        os._exit(4)
