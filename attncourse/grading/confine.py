"""Confinement the sandboxed child applies to itself before any learner code runs.

Each layer is best effort and reports what it managed, so the grader can say in its report
how the submission was confined (``"confinement"`` in the JSON report):

* **resource limits** (all POSIX): address space, CPU seconds, file size, no core files;
* **no capabilities** (Linux, when the grader runs as root): the bounding set and the
  effective/permitted sets are emptied, so learner code cannot raise its own limits;
* **seccomp** (Linux x86-64): no new processes (``fork``/``exec``; threads are allowed), no
  signals to other processes, no ``ptrace``, no sockets;
* **Landlock** (Linux ≥ 5.13): the file system becomes read-only except a temporary
  directory, and only the Python installation, its packages and the ``attncourse`` package
  are readable: the hidden tests, the solutions, other submissions and the report folder are
  not. With Landlock ABI ≥ 4 TCP is cut off, with ABI ≥ 6 signals cannot leave the sandbox.

Nothing here is needed for correct *scores* — the parent validates every value it receives —
it keeps hostile code from reading what it must not see or from outliving its grading.
"""
from __future__ import annotations

import ctypes
import os
import platform
import resource
import struct
import sys

MiB = 1 << 20


def set_limits(*, memory_mb: int, cpu_seconds: int, file_mb: int = 64) -> dict:
    """Resource limits of this process (inherited by anything it could start)."""
    done = {}
    for name, res, soft, hard in (
        ("address_space_mb", "RLIMIT_AS", memory_mb * MiB, memory_mb * MiB),
        ("cpu_seconds", "RLIMIT_CPU", cpu_seconds, cpu_seconds + 5),
        ("file_size_mb", "RLIMIT_FSIZE", file_mb * MiB, file_mb * MiB),
        ("core", "RLIMIT_CORE", 0, 0),
        ("open_files", "RLIMIT_NOFILE", 256, 256),
    ):
        r = getattr(resource, res, None)
        if r is None:
            continue
        try:
            cur_soft, cur_hard = resource.getrlimit(r)
            if cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
                soft = min(soft, hard)
            resource.setrlimit(r, (soft, hard))
            done[name] = soft // MiB if name.endswith("_mb") else soft
        except (ValueError, OSError):
            pass
    return done


def prefer_oom_kill() -> bool:
    """Make this process the kernel's first choice when the machine (or container) runs out of memory.

    Gradescope's default container has 768 MB: if learner code and the grader together exceed
    it, the OOM killer must end the sandbox (a "crash" the grader reports), never the grader
    (no results at all). Raising one's own ``oom_score_adj`` needs no privilege.
    """
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
        return True
    except OSError:
        return False


def die_with_parent() -> bool:
    """Linux: get SIGKILL when the parent (the grader) dies, so no helper outlives grading."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(1, 9, 0, 0, 0) == 0  # PR_SET_PDEATHSIG, SIGKILL
        return ok and os.getppid() != 1
    except Exception:  # noqa: BLE001
        return False


# ----------------------------------------------------------------------------- Linux bits
_libc = None


def _syscall(nr, *args):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall(ctypes.c_long(nr), *args)


def _prctl(option, arg2=0, arg3=0, arg4=0, arg5=0) -> int:
    return _syscall(157, ctypes.c_long(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                    ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))


def _linux_x86_64() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def no_new_privs() -> bool:
    return _linux_x86_64() and _prctl(38, 1) == 0  # PR_SET_NO_NEW_PRIVS


def drop_capabilities() -> bool:
    """As root: empty the capability sets so limits cannot be raised and nothing is regained."""
    if not _linux_x86_64() or os.geteuid() != 0:
        return False
    try:
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
    except OSError:
        last = 40
    for cap in range(last + 1):
        _prctl(24, cap)  # PR_CAPBSET_DROP
    _prctl(47, 4)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    # SECBIT_NOROOT | SECBIT_NO_SETUID_FIXUP | SECBIT_KEEP_CAPS_LOCKED and their locks
    _prctl(28, 0x01 | 0x02 | 0x04 | 0x08 | 0x20)  # PR_SET_SECUREBITS
    header = struct.pack("II", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = bytes(24)  # two zeroed {effective, permitted, inheritable}
    hbuf, dbuf = ctypes.create_string_buffer(header), ctypes.create_string_buffer(data)
    return _syscall(126, hbuf, dbuf) == 0  # capset


# seccomp ----------------------------------------------------------------------------
_NR = dict(fork=57, vfork=58, execve=59, execveat=322, clone=56, clone3=435, kill=62,
           tkill=200, tgkill=234, pidfd_send_signal=424, ptrace=101, process_vm_readv=310,
           process_vm_writev=311, socket=41)
_LD_W_ABS, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06
_ALLOW, _KILL = 0x7FFF0000, 0x80000000


def _errno(e: int) -> int:
    return 0x00050000 | e


def install_seccomp() -> bool:
    """No new processes, no signals or ptrace to others, no sockets (x86-64 only)."""
    if not _linux_x86_64():
        return False
    me = os.getpid()
    prog: list[tuple[int, int, int, int]] = []

    def ins(code, k=0, jt=0, jf=0):
        prog.append((code, jt, jf, k))

    ins(_LD_W_ABS, 4)                              # arch
    ins(_JEQ, 0xC000003E, 1, 0)                    # x86-64?
    ins(_RET, _KILL)                               # another ABI (e.g. x32 tricks): kill
    ins(_LD_W_ABS, 0)                              # syscall number
    deny = ["fork", "vfork", "execve", "execveat", "tkill", "pidfd_send_signal", "ptrace",
            "process_vm_readv", "process_vm_writev", "socket"]
    for name in deny:
        ins(_JEQ, _NR[name], 0, 1)
        ins(_RET, _errno(1))                       # EPERM
    ins(_JEQ, _NR["clone3"], 0, 1)
    ins(_RET, _errno(38))                          # ENOSYS: libc falls back to clone
    # clone: only threads (CLONE_THREAD set)
    ins(_JEQ, _NR["clone"], 0, 4)
    ins(_LD_W_ABS, 16)                             # args[0], low word
    ins(_JSET, 0x00010000, 1, 0)
    ins(_RET, _errno(1))
    ins(_RET, _ALLOW)
    # kill / tgkill: only to ourselves (the 6 instructions after the number test)
    for name in ("kill", "tgkill"):
        ins(_JEQ, _NR[name], 0, 6)
        ins(_LD_W_ABS, 16)                         # args[0], low word
        ins(_JEQ, me, 0, 2)
        ins(_LD_W_ABS, 20)                         # args[0], high word must be 0
        ins(_JEQ, 0, 1, 0)
        ins(_RET, _errno(1))
        ins(_RET, _ALLOW)
    ins(_RET, _ALLOW)
    # Every block that loads an argument ends in RET, so falling through to the next
    # number test always happens with the syscall number still in the accumulator.
    buf = b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in prog)
    filt = ctypes.create_string_buffer(buf)
    fbuf = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(filt)))
    if not no_new_privs():
        return False
    return _prctl(22, 2, ctypes.addressof(fbuf)) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


# landlock ---------------------------------------------------------------------------
_FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # EXECUTE | READ_FILE | READ_DIR
_FS_ALL_V1 = (1 << 13) - 1


def landlock_abi() -> int:
    if not _linux_x86_64():
        return 0
    r = _syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
    return int(r) if r > 0 else 0


def install_landlock(read_paths: list[str], write_paths: list[str]) -> int:
    """Restrict the file system (and, where supported, TCP and signals). Returns the ABI used."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    handled = _FS_ALL_V1
    if abi >= 2:
        handled |= 1 << 13  # REFER
    if abi >= 3:
        handled |= 1 << 14  # TRUNCATE
    if abi >= 5:
        handled |= 1 << 15  # IOCTL_DEV
    net = 0b11 if abi >= 4 else 0        # BIND_TCP | CONNECT_TCP, no rule: no TCP at all
    scoped = 0b11 if abi >= 6 else 0     # ABSTRACT_UNIX_SOCKET | SIGNAL
    if abi >= 6:
        attr = struct.pack("QQQ", handled, net, scoped)
    elif abi >= 4:
        attr = struct.pack("QQ", handled, net)
    else:
        attr = struct.pack("Q", handled)
    abuf = ctypes.create_string_buffer(attr)
    ruleset = _syscall(444, abuf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        return 0
    try:
        def add(path, access):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                return
            try:
                is_dir = os.path.isdir(path)
                allowed = access if is_dir else access & ((1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15))
                rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed & handled, fd))
                _syscall(445, ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint32(0))
            finally:
                os.close(fd)

        for p in read_paths:
            add(p, _FS_READ)
        for p in write_paths:
            add(p, handled)
        if not no_new_privs():
            return 0
        if _syscall(446, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return 0
        return abi
    finally:
        os.close(ruleset)
