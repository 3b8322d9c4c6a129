"""Escape attempts the sandbox must survive, each checked from the host side and reported.

:func:`run_escape_suite` runs every attack in a fresh sandbox and returns one :class:`EscapeResult` per attack:
whether it was *contained* (judged from the host: the listener saw no connection, the file did not appear, the run
ended within its limits, no process was left behind, ...), the run's status, and the evidence. ``assay evolve
sandbox-check`` prints it; the test suite asserts every attack is contained.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from assay.evolve.sandbox import Limits, RunResult, Sandbox


@dataclass
class EscapeResult:
    name: str
    contained: bool
    status: str
    seconds: float
    evidence: str

    def to_dict(self) -> dict[str, object]:
        return {"attack": self.name, "contained": self.contained, "status": self.status, "seconds": self.seconds,
                "evidence": self.evidence}


def _tail(text: str, n: int = 160) -> str:
    text = " ".join(text.strip().split())
    return text[-n:]


def _processes_named(marker: str) -> list[int]:
    """Host pids whose command name is ``marker`` (sandboxed processes are visible from the host)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == marker:
                        pids.append(int(d))
            except OSError:
                continue
    return pids


_SET_NAME = """
import ctypes
ctypes.CDLL(None).prctl(15, {marker!r}.encode(), 0, 0, 0)  # PR_SET_NAME: lets the host find these processes
"""


def attack_network(sb: Sandbox) -> EscapeResult:
    """Connect to a server listening on the host's 127.0.0.1."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = srv.accept()
                accepted.append(str(addr))
                conn.close()
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    code = f"""
import socket
s = socket.create_connection(("127.0.0.1", {port}), timeout=3)
s.sendall(b"escaped")
print("CONNECTED")
"""
    try:
        r = sb.run_python(code)
    finally:
        stop.set()
        t.join(2)
        srv.close()
    contained = not accepted and "CONNECTED" not in r.stdout and not r.ok
    return EscapeResult("open a socket to 127.0.0.1", contained, r.status, r.wall_seconds,
                        f"host listener on port {port} accepted {len(accepted)} connection(s); "
                        f"sandbox: {_tail(r.stderr) or r.stdout.strip()}")


def attack_write_outside(sb: Sandbox) -> EscapeResult:
    """Write files outside the scratch dir: system folders, and a world-writable folder of the host."""
    host_dir = Path(tempfile.mkdtemp(prefix="assay-escape-"))
    os.chmod(host_dir, 0o777)
    target = host_dir / "pwned"
    code = f"""
import os
ok = []
for path in ["/usr/pwned", "/etc/pwned", "/pwned", "/sandbox/../pwned", {str(target)!r}]:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("x")
        ok.append(path)
    except OSError as e:
        print("refused", path, type(e).__name__)
print("WROTE", ok)
"""
    try:
        r = sb.run_python(code)
        leaked = [p for p in ("/usr/pwned", "/etc/pwned", "/pwned", str(target)) if os.path.exists(p)]
        contained = not leaked and r.status in ("ok", "error")
        wrote = next((line for line in r.stdout.splitlines() if line.startswith("WROTE")), "")
        return EscapeResult("write outside the scratch dir", contained, r.status, r.wall_seconds,
                            f"files on the host afterwards: {leaked or 'none'}; inside: {wrote} "
                            "(a write under /tmp lands in the sandbox's private tmpfs)")
    finally:
        target.unlink(missing_ok=True)
        host_dir.rmdir()


def attack_read_home(sb: Sandbox) -> EscapeResult:
    """Read the invoking user's home directory (a canary file placed there for the test)."""
    home = Path(os.path.expanduser("~"))
    canary_value = secrets.token_hex(16)
    canary = home / f".assay-canary-{canary_value[:8]}"
    placed = False
    try:
        canary.write_text(canary_value)
        placed = True
    except OSError:
        pass
    code = f"""
import os
for p in [{str(home)!r}, {str(canary)!r}, "/root", "/home"]:
    try:
        if os.path.isdir(p):
            print("LISTED", p, os.listdir(p)[:20])
        else:
            print("READ", p, open(p).read())
    except OSError as e:
        print("refused", p, type(e).__name__)
"""
    try:
        r = sb.run_python(code)
    finally:
        if placed:
            canary.unlink(missing_ok=True)
    leaked = canary_value in r.stdout or "LISTED" in r.stdout or "READ" in r.stdout
    return EscapeResult("read the user's home", not leaked and r.status in ("ok", "error"), r.status,
                        r.wall_seconds, f"canary {'placed' if placed else 'not placed'} in {home}; sandbox saw: "
                                        f"{_tail(r.stdout, 240)}")


def attack_fork_bomb(sb: Sandbox) -> EscapeResult:
    """Fork without end; every child forks too."""
    marker = "assaybomb" + secrets.token_hex(3)
    code = _SET_NAME.format(marker=marker) + """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    limits = sb.limits.with_(wall_seconds=min(sb.limits.wall_seconds, 6.0), cpu_seconds=min(sb.limits.cpu_seconds, 3))
    r = sb.run_python(code, limits=limits)
    left = _processes_named(marker)
    deadline = time.monotonic() + 5
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _processes_named(marker)
    contained = not left and r.wall_seconds < limits.wall_seconds + 5 and not r.ok
    return EscapeResult("fork bomb", contained, r.status, r.wall_seconds,
                        f"stopped after {r.wall_seconds:.1f} s (limits: {limits.processes} processes, "
                        f"{limits.wall_seconds:g} s wall); processes left on the host: {len(left)}")


def attack_allocate(sb: Sandbox) -> EscapeResult:
    """Allocate 4 GB (touching every page)."""
    code = """
x = bytearray(4 * 1024 ** 3)
for i in range(0, len(x), 4096):
    x[i] = 1
print("ALLOCATED")
"""
    r = sb.run_python(code)
    contained = "ALLOCATED" not in r.stdout and r.status == "memory_limit"
    return EscapeResult("allocate 4 GB", contained, r.status, r.wall_seconds,
                        f"limit {sb.limits.memory_mb} MB address space; {_tail(r.stderr, 80)}")


def attack_infinite_loop(sb: Sandbox) -> EscapeResult:
    """Spin forever."""
    limits = sb.limits.with_(cpu_seconds=min(sb.limits.cpu_seconds, 2.0), wall_seconds=min(sb.limits.wall_seconds, 10))
    r = sb.run_python("while True:\n    pass\n", limits=limits)
    contained = r.status in ("cpu_limit", "timeout") and r.wall_seconds < limits.wall_seconds + 5
    return EscapeResult("infinite loop", contained, r.status, r.wall_seconds,
                        f"stopped after {r.wall_seconds:.1f} s (CPU limit {limits.cpu_seconds:g} s, wall "
                        f"{limits.wall_seconds:g} s)")


def attack_print_1gb(sb: Sandbox) -> EscapeResult:
    """Print 1 GB to stdout."""
    code = """
import sys
chunk = "x" * (1 << 20)
for _ in range(1024):
    sys.stdout.write(chunk)
sys.stdout.flush()
print("DONE", file=sys.stderr)
"""
    r = sb.run_python(code)
    contained = r.status == "output_limit" and len(r.stdout.encode()) <= sb.limits.output_bytes
    return EscapeResult("print 1 GB", contained, r.status, r.wall_seconds,
                        f"captured {len(r.stdout.encode()):,} bytes (cap {sb.limits.output_bytes:,}); killed at "
                        f"{r.wall_seconds:.2f} s")


def _host_uid_of(marker: str, timeout: float = 8.0) -> str | None:
    """The real uid, as the host sees it, of the first process named ``marker`` (polls until it appears)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _processes_named(marker):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            return line.split()[1]
            except OSError:
                continue
        time.sleep(0.02)
    return None


def attack_privileges(sb: Sandbox) -> EscapeResult:
    """Use root powers: are we root on the host, can we trace, mount, or make new namespaces?"""
    marker = "assaypriv" + secrets.token_hex(3)
    code = _SET_NAME.format(marker=marker) + """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
print("UID", os.getuid())
for name, args in [("ptrace", (0, 0, 0, 0)), ("unshare", (0x10000000,)), ("unshare", (0x40000000,)),
                   ("mount", (b"none", b"/usr", b"tmpfs", 0, None))]:
    rc = getattr(libc, name)(*args)
    print("CALL", name, rc, ctypes.get_errno())
time.sleep(1.5)  # stay alive while the host looks at this process
"""
    found: list[str | None] = []
    watcher = threading.Thread(target=lambda: found.append(_host_uid_of(marker)), daemon=True)
    watcher.start()
    r = sb.run_python(code)
    watcher.join(10)
    host_uid = found[0] if found else None
    calls = [x.split() for x in r.stdout.splitlines() if x.startswith("CALL")]
    all_refused = len(calls) == 4 and all(c[2] == "-1" for c in calls)
    contained = host_uid is not None and host_uid != "0" and all_refused
    return EscapeResult("root powers (host uid; ptrace, unshare, mount)", contained, r.status, r.wall_seconds,
                        f"sandboxed process runs as host uid {host_uid}; "
                        + ", ".join(f"{c[1]}: errno {c[3]}" for c in calls))


#: the variable the environment probe plants, with a fresh random value, in the parent's environment
CANARY_VAR = "ASSAY_SANDBOX_CANARY_SECRET"
#: bwrap options that would show the sandbox's set-up (host paths, variables) in a command line seen inside
BWRAP_OPTIONS = ("--ro-bind", "--setenv", "--seccomp", "--tmpfs", "--uid", "--unshare-all")

_READ_PROCESSES = """
import json, os
seen = {"os.environ": json.dumps(dict(os.environ))}
for pid in sorted((d for d in os.listdir("/proc") if d.isdigit()), key=int):
    for what in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{what}", "rb") as f:
                seen[f"/proc/{pid}/{what}"] = f.read().decode("utf-8", "replace").replace("\\x00", " ")
        except OSError as e:
            seen[f"/proc/{pid}/{what}"] = "unreadable: " + type(e).__name__
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        fds = []
    for fd in fds:  # files other processes hold open (memfds: bwrap's options, the program's files)
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if not os.readlink(path).startswith("/"):
                continue  # pipes and sockets: reading could block
            fd_ = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                seen[path] = os.pread(fd_, 1 << 16, 0).decode("utf-8", "replace").replace("\\x00", " ")
            finally:
                os.close(fd_)
        except OSError as e:
            seen[path] = "unreadable: " + type(e).__name__
print(json.dumps(seen))
"""


@contextlib.contextmanager
def canary_in_environment() -> Iterator[str]:
    """Put a fresh secret in this process's environment (as an API key would be) for the duration."""
    value = "sk-canary-" + secrets.token_hex(16)
    old = os.environ.get(CANARY_VAR)
    os.environ[CANARY_VAR] = value
    try:
        yield value
    finally:
        if old is None:
            os.environ.pop(CANARY_VAR, None)
        else:
            os.environ[CANARY_VAR] = old


def _processes_seen(r: RunResult) -> dict[str, str]:
    try:
        seen = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return seen if isinstance(seen, dict) else {}


def attack_host_environment(sb: Sandbox) -> EscapeResult:
    """Read the host's environment: a canary secret in the parent's environment, looked for in ``os.environ`` and
    in ``/proc/*/environ`` and ``/proc/*/cmdline`` of every process visible inside."""
    with canary_in_environment() as canary:
        r = sb.run_python(_READ_PROCESSES)
    seen = _processes_seen(r)
    leaked = sorted(k for k, v in seen.items() if canary in v)
    readable = sorted(k for k, v in seen.items() if k.startswith("/proc/") and not v.startswith("unreadable"))
    contained = r.ok and "/proc/1/environ" in seen and not leaked and canary not in r.stdout + r.stderr
    return EscapeResult("read the host's environment (canary secret)", contained, r.status, r.wall_seconds,
                        f"canary found in: {', '.join(leaked) or 'nothing'}; read {len(readable)} files of "
                        f"{len({k.split('/')[2] for k in readable})} processes"
                        + ("" if r.ok else f"; {_tail(r.stderr)}"))


def attack_pid1_command_line(sb: Sandbox) -> EscapeResult:
    """Read the sandbox's set-up from ``/proc/1/cmdline`` (bwrap's command line: host paths, variables set) and
    from the files other processes hold open (``/proc/*/fd/*``: bwrap's options travel in a memory file)."""
    r = sb.run_python(_READ_PROCESSES)
    seen = _processes_seen(r)
    shown = sorted(k for k, v in seen.items() if k.startswith("/proc/") and any(o in v.split() for o in BWRAP_OPTIONS))
    contained = r.ok and "/proc/1/cmdline" in seen and not shown
    return EscapeResult("read the sandbox's set-up from /proc/1/cmdline", contained, r.status, r.wall_seconds,
                        f"command lines or open files showing bwrap options: {', '.join(shown) or 'none'}; "
                        f"/proc/1/cmdline = "
                        f"{seen.get('/proc/1/cmdline', '?')[:120]!r}")


def _shared_memory_mb() -> dict[str, int]:
    """The host's shared memory in use, in MB: ``Shmem`` of /proc/meminfo (tmpfs files, SysV and POSIX shm) and the
    space used on the host's ``/dev/shm``."""
    shmem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                shmem = int(line.split()[1]) // 1024
                break
    try:
        st = os.statvfs("/dev/shm")
        dev_shm = (st.f_blocks - st.f_bfree) * st.f_frsize // (1 << 20)
    except OSError:
        dev_shm = 0
    return {"shmem": shmem, "dev_shm": dev_shm}


@contextlib.contextmanager
def _peak_shared_memory_growth() -> Iterator[dict[str, int]]:
    """Sample the host's shared memory while the block runs; the yielded dict receives the peak growth (MB) of each
    :func:`_shared_memory_mb` figure when the block ends."""
    base = _shared_memory_mb()
    peak = dict(base)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for k, v in _shared_memory_mb().items():
                peak[k] = max(peak[k], v)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    growth: dict[str, int] = {}
    try:
        yield growth
    finally:
        stop.set()
        t.join(2)
        growth.update({k: peak[k] - base[k] for k in base})


def attack_dev_writes(sb: Sandbox) -> EscapeResult:
    """Write into ``/dev`` and fill ``/dev/shm`` with 40 x 15 MB (memory-backed filesystems: host memory)."""
    code = """
import os, time
out = []
for path in ["/dev/pwned", "/dev/shm/../pwned"]:
    try:
        with open(path, "w") as f:
            f.write("x")
        out.append("WROTE " + path)
    except OSError as e:
        out.append("refused " + path + ": " + e.strerror)
written = 0
try:
    for i in range(40):
        with open(f"/dev/shm/fill{i}", "wb") as f:
            f.write(b"x" * (15 << 20))
        written += 15
except OSError as e:
    out.append("shm stopped: " + e.strerror)
time.sleep(0.5)  # hold it while the host looks
print("SHM_MB", written, "|", "; ".join(out))
"""
    limits = sb.limits.with_(file_size_mb=max(sb.limits.file_size_mb, 16))
    with _peak_shared_memory_growth() as growth:
        r = sb.run_python(code, limits=limits)
    line = next((x for x in r.stdout.splitlines() if x.startswith("SHM_MB")), "")
    written = int(line.split()[1]) if line else -1
    dev_writes = "WROTE" in line
    cap = limits.scratch_mb
    contained = (r.ok and not dev_writes and 0 <= written <= cap and "shm stopped" in line
                 and growth["shmem"] < 2 * cap + 64 and growth["dev_shm"] < cap)
    return EscapeResult("write into /dev and fill /dev/shm (40 x 15 MB)", contained, r.status, r.wall_seconds,
                        f"wrote {written} MB to /dev/shm (scratch cap {cap} MB); the host's /dev/shm grew "
                        f"{growth['dev_shm']} MB, its shared memory {growth['shmem']} MB at most (the sandbox's "
                        f"tmpfs); {line.partition('|')[2].strip() or _tail(r.stderr)}")


def attack_memory_outside_limit(sb: Sandbox) -> EscapeResult:
    """Hold memory the address-space limit does not see: SysV shared memory segments (made, filled, detached) and
    memfd files filled with ``write``, twice the memory limit each."""
    limits = sb.limits.with_(memory_mb=256)
    code = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
chunk, sysv, memfd, notes = 128, 0, 0, []
for _ in range(4):
    sid = libc.shmget(0, chunk << 20, 0o1600)
    if sid < 0:
        notes.append(f"shmget errno {ctypes.get_errno()}")
        break
    addr = libc.shmat(sid, None, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        notes.append(f"shmat errno {ctypes.get_errno()}")
        break
    ctypes.memset(addr, 1, chunk << 20)
    libc.shmdt(addr)
    sysv += chunk
fds = []
try:
    for _ in range(32):
        fd = os.memfd_create("hold")
        for _ in range(15):
            os.write(fd, b"x" * (1 << 20))
        fds.append(fd)
        memfd += 15
except OSError as e:
    notes.append(f"memfd {type(e).__name__}")
time.sleep(0.5)
print("HELD", sysv, memfd, "|", "; ".join(notes))
"""
    with _peak_shared_memory_growth() as growth:
        r = sb.run_python(code, limits=limits)
    line = next((x for x in r.stdout.splitlines() if x.startswith("HELD")), "")
    sysv, memfd = (int(x) for x in line.split()[1:3]) if line else (-1, -1)
    contained = line != "" and sysv + memfd <= limits.memory_mb and growth["shmem"] < limits.memory_mb
    return EscapeResult("hold memory outside the address-space limit (SysV shm, memfd)", contained, r.status,
                        r.wall_seconds, f"held {sysv} MB of SysV shared memory and {memfd} MB of memfd files "
                        f"(limit {limits.memory_mb} MB); host shared memory grew {growth['shmem']} MB at most; "
                        f"{line.partition('|')[2].strip() or _tail(r.stderr)}")


def attack_memory_many_processes(sb: Sandbox) -> EscapeResult:
    """Hold the memory limit many times over by splitting it across processes: 8 children each allocate (and touch)
    200 MB under a 256 MB limit (``RLIMIT_AS`` is per process)."""
    limits = sb.limits.with_(memory_mb=256, processes=max(sb.limits.processes, 16))
    code = """
import os, time
r, w = os.pipe()
kids = []
for _ in range(8):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        block = bytearray(200 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os.write(w, b"x")
        time.sleep(1.5)
        os._exit(0)
    kids.append(pid)
os.close(w)
held = 0
while held < 8 and os.read(r, 1):
    held += 1
print("CHILDREN_HOLDING", held, flush=True)
for pid in kids:
    os.waitpid(pid, 0)
"""
    r = sb.run_python(code, limits=limits)
    line = next((x for x in r.stdout.splitlines() if x.startswith("CHILDREN_HOLDING")), "")
    held = int(line.split()[1]) if line else 0
    contained = r.status == "memory_limit" and held * 200 <= limits.memory_mb + 200
    return EscapeResult("split memory across processes (8 x 200 MB, limit 256 MB)", contained, r.status,
                        r.wall_seconds, f"{held} children held 200 MB each at once ({held * 200} MB); "
                                        f"{r.detail or _tail(r.stderr)}")


ATTACKS: dict[str, Callable[[Sandbox], EscapeResult]] = {
    "network": attack_network,
    "write_outside": attack_write_outside,
    "read_home": attack_read_home,
    "fork_bomb": attack_fork_bomb,
    "allocate_4gb": attack_allocate,
    "infinite_loop": attack_infinite_loop,
    "print_1gb": attack_print_1gb,
    "privileges": attack_privileges,
    "host_environment": attack_host_environment,
    "pid1_command_line": attack_pid1_command_line,
    "dev_writes": attack_dev_writes,
    "memory_outside_limit": attack_memory_outside_limit,
    "memory_many_processes": attack_memory_many_processes,
}


#: the limits the escape suite runs under by default (the fork bomb and the loop use at most 6 s and 10 s of wall)
ESCAPE_LIMITS = Limits(cpu_seconds=5, wall_seconds=10, memory_mb=1024, processes=32)


def run_escape_suite(sandbox: Sandbox | None = None, only: list[str] | None = None) -> list[EscapeResult]:
    """Run every attack (or those named in ``only``) in fresh sandboxes."""
    sb = sandbox or Sandbox(ESCAPE_LIMITS)
    sb.check()
    return [fn(sb) for name, fn in ATTACKS.items() if only is None or name in only]


__all__ = ["ATTACKS", "CANARY_VAR", "ESCAPE_LIMITS", "EscapeResult", "RunResult", "canary_in_environment",
           "run_escape_suite"]
