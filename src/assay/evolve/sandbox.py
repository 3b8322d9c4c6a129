"""Run untrusted code (LLM-written programs and their tests) in a bubblewrap sandbox.

Why bubblewrap rather than hand-rolled ``unshare`` + rlimits + seccomp: bubblewrap (Debian package ``bubblewrap``,
the sandbox under Flatpak) already does the fiddly part correctly: it builds a fresh mount tree from explicit binds,
creates the user, PID, network, IPC, UTS and cgroup namespaces, sets ``PR_SET_NO_NEW_PRIVS``, drops capabilities,
kills the whole sandbox when its parent dies, and loads a seccomp filter right before ``exec``. We add what it does
not: resource limits, a seccomp filter (:mod:`assay.evolve.seccomp`), a wall-clock timeout, output caps, and a
careful reading of how the program ended.

What the sandboxed program gets:

* **no network**: a new, empty network namespace (only its own loopback); nothing on the host is reachable;
* **nothing of the host's environment**: bwrap itself is started with an empty environment, and its options
  (the mounts, the variables set inside) reach it through a memory file (``--args FD``), so no process visible
  inside (``/proc/*/environ``, ``/proc/*/cmdline``) carries host data; PID 1 inside is bwrap's small init, whose
  command line is ``bwrap --args N -- <the command>``. The program's environment is :data:`SANDBOX_ENV` plus what
  the caller passes in ``env=``;
* **a read-only view of the system**: ``/usr`` (and the ``/bin``, ``/lib*`` links), the dynamic-linker cache and
  the ``/etc/alternatives`` links, read-only; no ``/home``, ``/root``, ``/work``, ``/var``, host ``/tmp``;
* **a minimal, read-only** ``/dev``: the devices ``null``, ``zero``, ``random`` and ``urandom``, the ``fd``,
  ``stdin``, ``stdout`` and ``stderr`` links, and ``/dev/shm``, a link to the private ``/tmp`` (so POSIX shared
  memory and semaphores work and count against the scratch cap; the host's ``/dev/shm`` is never touched);
* **a private writable scratch dir** ``/sandbox`` (its working directory) and a private ``/tmp``: tmpfs mounts of
  ``Limits.scratch_mb`` each that vanish with the sandbox; the program's files are copied in from memory;
* **an unprivileged identity**: uid/gid 65534 inside a new user namespace, no capabilities, no further user
  namespaces. When Assay itself runs as root (CI, containers), bubblewrap is started as uid 65534 too, so the
  sandbox is not root on the host either: without this a root-mapped sandbox would ignore ``RLIMIT_NPROC``;
* **limits** (:class:`Limits`): CPU seconds, memory, processes/threads, file size, open files, no core dumps (set
  by ``prlimit`` inside the new user namespace, so the process limit counts only the sandbox's own processes:
  Linux >= 5.14 counts ``RLIMIT_NPROC`` per user namespace); a wall-clock timeout; stdout and stderr each capped
  (the program is killed once it exceeds the cap). Memory is capped by a cgroup v2 ``memory.max`` (all processes
  of the run together, real memory) where the machine delegates one (:mod:`assay.evolve.cgroup`), else by
  ``RLIMIT_AS`` (address space, per process) plus a watchdog in the parent that sums the resident memory of all
  the run's processes (:data:`MEMORY_POLL_SECONDS`); ``describe()`` and every :class:`RunResult` say which. The seccomp
  filter denies SysV shared memory and message queues and ``memfd_create``, memory that ``RLIMIT_AS`` would not
  see.

:meth:`Sandbox.run` returns a :class:`RunResult` whose ``status`` says how the program ended: ``ok``, ``error``
(non-zero exit, e.g. a failed assertion), ``timeout``, ``cpu_limit``, ``memory_limit``, ``file_size_limit``,
``output_limit``, ``killed`` (by a signal), or ``sandbox_error`` (the sandbox itself could not start).

Requirements: Linux with unprivileged user namespaces (``sysctl kernel.unprivileged_userns_clone=1`` on old Debian
kernels; ``kernel.apparmor_restrict_unprivileged_userns=0`` on Ubuntu >= 23.10 unless bwrap has an AppArmor
profile), ``bwrap`` (``apt-get install bubblewrap``) and ``prlimit`` (util-linux).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

from assay.evolve import seccomp
from assay.evolve.cgroup import ENV_VAR as CGROUP_ENV_VAR
from assay.evolve.cgroup import MemoryLimiter, RunGroup, detect

#: the uid/gid the sandboxed program runs as (inside), and the host uid bubblewrap is started as when we are root
SANDBOX_UID = 65534
SCRATCH = "/sandbox"
DEFAULT_PYTHON = "/usr/bin/python3"
#: host paths made visible read-only (when they exist); symlinks (merged /usr) are recreated as symlinks
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_PATHS = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
#: the device nodes bound into the sandbox's /dev
DEVICES = ("null", "zero", "random", "urandom")
#: the environment of every sandboxed program (plus ``Sandbox(env=...)``); nothing comes from the host
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": SCRATCH, "TMPDIR": "/tmp", "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
#: how often the memory of a run's processes is summed when no cgroup limits it (RLIMIT_AS is per process)
MEMORY_POLL_SECONDS = 0.05
#: what a program prints when an allocation failed (Python's MemoryError, mmap/fork ENOMEM, C++ bad_alloc)
OUT_OF_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc")
STATUSES = ("ok", "error", "timeout", "cpu_limit", "memory_limit", "file_size_limit", "output_limit", "killed",
            "sandbox_error")


class SandboxError(RuntimeError):
    """The sandbox cannot run anything on this machine (bwrap missing, user namespaces disabled, ...)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    cpu_seconds: float = 10.0  # RLIMIT_CPU (SIGXCPU, then SIGKILL one second later)
    wall_seconds: float = 20.0  # killed after this much real time
    memory_mb: int = 1024  # cgroup memory.max where delegated, else RLIMIT_AS (address space: MemoryError beyond)
    processes: int = 32  # RLIMIT_NPROC: processes and threads of the sandbox user in its namespace
    file_size_mb: int = 16  # RLIMIT_FSIZE: largest file the program may write (SIGXFSZ)
    open_files: int = 256  # RLIMIT_NOFILE
    scratch_mb: int = 64  # size of the /sandbox and /tmp tmpfs mounts (each; /dev/shm is a link into /tmp)
    output_bytes: int = 1 << 20  # per stream; the program is killed when stdout or stderr exceeds it

    def with_(self, **changes: Any) -> "Limits":
        return replace(self, **changes)


@dataclass
class RunResult:
    """How a sandboxed program ended and what it printed (each stream cut at ``Limits.output_bytes``)."""

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    wall_seconds: float
    truncated: bool = False  # an output stream hit its cap
    detail: str = ""  # a short explanation for non-ok statuses
    memory_limit_by: str = ""  # "cgroup" (memory.max) or "rlimit_as" (address space)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def error_summary(self, max_chars: int = 1200) -> str:
        """What to show an LLM (or a person) about a failure: the end of stderr (the traceback), or the status."""
        if self.ok:
            return ""
        head = {"timeout": "Timed out (the program ran too long, probably an infinite loop).",
                "cpu_limit": "Exceeded the CPU time limit (probably an infinite loop or a too slow algorithm).",
                "memory_limit": "Exceeded the memory limit (out of memory).",
                "output_limit": "Printed too much output.",
                "file_size_limit": "Tried to write a too large file.",
                "killed": f"Killed by a signal ({self.detail}).",
                "sandbox_error": f"The sandbox failed to start: {self.detail}"}.get(self.status, "")
        tail = self.stderr.strip()
        if len(tail) > max_chars:
            tail = "…" + tail[-max_chars:]
        return "\n".join(x for x in (head, tail) if x) or f"exit code {self.exit_code}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_name(name: str) -> str:
    p = PurePosixPath(name)
    if p.is_absolute() or not p.parts or any(part in ("..", ".", "") for part in p.parts) or "\x00" in name:
        raise ValueError(f"sandbox file names must be relative paths without '..': {name!r}")
    return str(p)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name.replace("/", "_")[:200], 0)  # no MFD_CLOEXEC: bwrap inherits it via pass_fds
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class Sandbox:
    """Runs commands under bubblewrap with :class:`Limits`. Thread-safe: each :meth:`run` is independent.

    ``python`` is the interpreter :meth:`run_python` uses inside the sandbox (default the system's
    ``/usr/bin/python3``: Assay's own virtualenv is not visible inside). ``ro_binds`` adds host paths, read-only, at
    the same place inside (e.g. another interpreter's prefix, a venv with numpy). ``env`` adds environment variables
    (the host environment is never passed in). ``cgroup`` names a delegated cgroup v2 directory for the memory
    limit (default: ``$ASSAY_SANDBOX_CGROUP``, else found if there is one, else ``RLIMIT_AS``).
    """

    def __init__(self, limits: Limits | None = None, *, python: str = DEFAULT_PYTHON,
                 ro_binds: Sequence[str] = (), env: Mapping[str, str] | None = None, use_seccomp: bool = True,
                 bwrap: str | None = None, prlimit: str | None = None, cgroup: str | None = None) -> None:
        self.limits = limits or Limits()
        self.python = python
        self.ro_binds = [str(Path(p)) for p in ro_binds]
        self.env = dict(env or {})
        self.bwrap = bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
        self.prlimit = prlimit or shutil.which("prlimit") or "/usr/bin/prlimit"
        self.setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        self.memory = _detect_memory_limiter(cgroup)
        self.seccomp_filter = seccomp.build_filter() if use_seccomp else None
        self.as_root = os.geteuid() == 0
        self._checked = False
        self._check_lock = threading.Lock()

    # -- description ---------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What isolates the programs (for reports and docs)."""
        return {
            "engine": "bubblewrap", "bwrap": self.bwrap, "python": self.python,
            "namespaces": ["user", "pid", "net", "ipc", "uts", "cgroup", "mount"],
            "host_uid": SANDBOX_UID if self.as_root else os.geteuid(), "sandbox_uid": SANDBOX_UID,
            "visible_read_only": [p for p in SYSTEM_PATHS + ETC_PATHS if os.path.lexists(p)] + self.ro_binds,
            "writable": [SCRATCH, "/tmp"], "devices": [f"/dev/{d}" for d in DEVICES] + ["/dev/shm -> /tmp"],
            "environment": sorted({**SANDBOX_ENV, **self.env}), "host_environment": "none (bwrap starts from an "
            "empty environment; its options come through a memory file)",
            "memory_limit": {"by": self.memory.by, "note": self.memory.note}, "limits": asdict(self.limits),
            "seccomp": seccomp.denied_syscalls() if self.seccomp_filter else "not available on this architecture",
        }

    # -- checks --------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`SandboxError` (with a hint) if sandboxes cannot start here. Cached after the first success."""
        if self._checked:
            return
        with self._check_lock:
            if self._checked:
                return
            if not os.path.isfile(self.bwrap):
                raise SandboxError("bubblewrap is not installed: apt-get install bubblewrap (or dnf install "
                                   "bubblewrap)")
            if not os.path.isfile(self.prlimit):
                raise SandboxError("prlimit (util-linux) is not installed")
            result = self._run([self.python, "-c", "print('ready')"], {}, b"", self.limits)
            if result.status != "ok" or result.stdout.strip() != "ready":
                raise SandboxError(
                    f"the sandbox does not start ({result.status}: {result.detail or result.stderr.strip()[:300]}). "
                    "It needs unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1 (Debian), "
                    "kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu), or a bwrap AppArmor profile; "
                    f"and an interpreter at {self.python} (see `python=`)")
            self._checked = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """``(True, "")`` when a default sandbox starts here, else ``(False, why)``."""
        try:
            cls().check()
        except SandboxError as e:
            return False, str(e)
        return True, ""

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], files: Mapping[str, str | bytes] | None = None, stdin: str | bytes = b"",
            limits: Limits | None = None) -> RunResult:
        """Run ``argv`` in a fresh sandbox whose ``/sandbox`` holds ``files`` (name → content); ``stdin`` is fed in."""
        self.check()
        return self._run(argv, files or {}, stdin, limits or self.limits)

    def run_python(self, code: str, files: Mapping[str, str | bytes] | None = None, stdin: str | bytes = b"",
                   args: Sequence[str] = (), limits: Limits | None = None) -> RunResult:
        """Run Python ``code`` (as ``/sandbox/main.py``) with the sandbox interpreter."""
        all_files = {**(files or {}), "main.py": code}
        return self.run([self.python, "-s", "-B", "main.py", *args], all_files, stdin, limits)

    def run_many(self, jobs: Iterable[tuple[Sequence[str], Mapping[str, str | bytes]]], workers: int = 2,
                 limits: Limits | None = None) -> list[RunResult]:
        """Run ``(argv, files)`` jobs, ``workers`` sandboxes at a time; results in input order."""
        jobs = list(jobs)
        self.check()
        with ThreadPoolExecutor(max(1, workers)) as pool:
            return list(pool.map(lambda j: self._run(j[0], j[1], b"", limits or self.limits), jobs))

    def python_many(self, codes: Sequence[str], workers: int = 2, limits: Limits | None = None) -> list[RunResult]:
        """:meth:`run_python` over many programs in parallel; results in input order."""
        return self.run_many((([self.python, "-s", "-B", "main.py"], {"main.py": c}) for c in codes), workers,
                             limits)

    # -- internals -----------------------------------------------------------------------------------------------
    def _bwrap_options(self, limits: Limits, fds: list[int], files: Mapping[str, str | bytes],
                       status_fd: int) -> list[str]:
        """bwrap's options (everything before the command); they reach bwrap through ``--args FD``."""
        args = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
                "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
        for path in SYSTEM_PATHS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in ETC_PATHS:
            args += ["--ro-bind-try", path, path]
        for path in self.ro_binds:
            args += ["--ro-bind", path, path]
        passwd = _memfd("passwd", f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:{SCRATCH}:/bin/false\n".encode())
        group = _memfd("group", f"sandbox:x:{SANDBOX_UID}:\n".encode())
        fds += [passwd, group]
        args += ["--ro-bind-data", str(passwd), "/etc/passwd", "--ro-bind-data", str(group), "/etc/group"]
        size = str(limits.scratch_mb * 1024 * 1024)
        args += ["--proc", "/proc", *_minimal_dev(),
                 "--size", size, "--perms", "1777", "--tmpfs", "/tmp",
                 "--size", size, "--perms", "0755", "--tmpfs", SCRATCH]
        made_dirs: set[str] = set()
        for name, content in files.items():
            rel = _check_name(name)
            for parent in reversed(PurePosixPath(rel).parents[:-1]):
                if str(parent) not in made_dirs:
                    made_dirs.add(str(parent))
                    args += ["--dir", f"{SCRATCH}/{parent}"]
            data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else bytes(content)
            fd = _memfd(rel, data)
            fds.append(fd)
            args += ["--perms", "0644", "--file", str(fd), f"{SCRATCH}/{rel}"]
        # the root of the mount tree is bwrap's own tmpfs: make it (and /etc in it) read-only too, and /dev
        args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SCRATCH, "--clearenv"]
        for k, v in {**SANDBOX_ENV, **self.env}.items():
            args += ["--setenv", k, v]
        args += ["--json-status-fd", str(status_fd)]
        if self.seccomp_filter is not None:
            sfd = _memfd("seccomp", self.seccomp_filter)
            fds.append(sfd)
            args += ["--seccomp", str(sfd)]
        return args

    def _prlimit(self, limits: Limits) -> list[str]:
        """The ``prlimit`` command that sets the run's rlimits inside the sandbox, then runs the program."""
        cpu = max(1, int(round(limits.cpu_seconds)))
        fsize = limits.file_size_mb * 1024 * 1024
        args = [self.prlimit, f"--cpu={cpu}:{cpu + 1}", f"--nproc={limits.processes}:{limits.processes}",
                f"--fsize={fsize}:{fsize}", f"--nofile={limits.open_files}:{limits.open_files}", "--core=0:0"]
        if self.memory.by == "rlimit_as":
            mem = limits.memory_mb * 1024 * 1024
            args.append(f"--as={mem}:{mem}")
        return args + ["--"]

    def _launcher(self, group: RunGroup | None) -> tuple[list[str], dict[str, Any]]:
        """What starts bwrap: the command prefix and Popen's privilege drop. Run as root, bwrap is started as
        uid 65534; with a cgroup, a shell first moves itself into the run's group (while it still may)."""
        if group is None:
            drop = {"user": SANDBOX_UID, "group": SANDBOX_UID, "extra_groups": []} if self.as_root else {}
            return [], drop
        # env -i: the shell sets PWD (the host's working directory), which bwrap's init would show inside
        prefix = ["/bin/sh", "-c", 'echo 0 > "$0" && exec /usr/bin/env -i "$@"', group.procs_file]
        if self.as_root:
            prefix += [self.setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups", "--"]
        return prefix, {}

    def _run(self, argv: Sequence[str], files: Mapping[str, str | bytes], stdin: str | bytes,
             limits: Limits) -> RunResult:
        if not argv:
            raise ValueError("empty command")
        fds: list[int] = []
        status_r, status_w = os.pipe()
        started = time.monotonic()
        group: RunGroup | None = None
        try:
            try:
                options = self._bwrap_options(limits, fds, files, status_w)
                fds.append(_memfd("bwrap-args", _nul_joined(options)))
                command = [self.bwrap, "--args", str(fds[-1]), "--", *self._prlimit(limits), *map(str, argv)]
            except BaseException:
                os.close(status_r)
                raise
            stdin_fd = _memfd("stdin", stdin.encode("utf-8", "surrogatepass") if isinstance(stdin, str) else stdin)
            fds.append(stdin_fd)
            try:
                if self.memory.by == "cgroup":
                    group = self.memory.new_group(limits.memory_mb)
                prefix, drop = self._launcher(group)
                # env={}: bwrap's own environment is visible inside (/proc/1/environ of its init), so it gets none
                proc = subprocess.Popen(prefix + command, stdin=stdin_fd, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, pass_fds=tuple(fds) + (status_w,), env={},
                                        start_new_session=True, close_fds=True, **drop)
            except OSError as e:
                os.close(status_r)
                if group is not None:
                    group.remove()
                return RunResult("sandbox_error", None, "", "", 0.0, detail=f"cannot start bwrap: {e}",
                                 memory_limit_by=self.memory.by)
        finally:
            os.close(status_w)
            for fd in fds:
                os.close(fd)
        try:
            out, err, truncated, timed_out, over_memory = self._collect(proc, limits, started)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            proc.wait()
            status_json = _read_all(status_r)
            os.close(status_r)
            oom = group is not None and group.oom_killed()
            if group is not None:
                group.remove()
        wall = time.monotonic() - started
        result = _classify(proc.returncode, status_json, out, err, truncated, timed_out, wall, limits,
                           oom or over_memory, self.memory.by)
        result.memory_limit_by = self.memory.by
        return result

    def _collect(self, proc: subprocess.Popen, limits: Limits,
                 started: float) -> tuple[bytes, bytes, bool, bool, bool]:
        """Read stdout and stderr until both close, the wall clock runs out, a stream exceeds its cap, or (without a
        cgroup) the memory of all the run's processes together exceeds the limit (checked every
        :data:`MEMORY_POLL_SECONDS`: ``RLIMIT_AS`` alone is per process)."""
        assert proc.stdout is not None and proc.stderr is not None
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        bufs = {out_fd: bytearray(), err_fd: bytearray()}
        sel = selectors.DefaultSelector()
        for f in (proc.stdout, proc.stderr):
            os.set_blocking(f.fileno(), False)
            sel.register(f.fileno(), selectors.EVENT_READ)
        truncated = timed_out = over_memory = False
        deadline = started + limits.wall_seconds
        watch = self.memory.by == "rlimit_as"
        poll = MEMORY_POLL_SECONDS if watch else 1.0
        next_check = time.monotonic() + poll
        try:
            while sel.get_map():
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    timed_out = True
                    break
                if watch and now >= next_check:
                    next_check = now + poll
                    if _tree_memory_mb(proc.pid) > limits.memory_mb:
                        over_memory = True
                        break
                for key, _ in sel.select(timeout=min(remaining, poll)):
                    try:
                        chunk = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(key.fd)
                        continue
                    buf = bufs[key.fd]
                    room = limits.output_bytes - len(buf)
                    buf += chunk[:max(room, 0)]
                    if len(chunk) > room:
                        truncated = True
                if truncated:
                    break
        finally:
            sel.close()
            if truncated or timed_out or over_memory:
                _kill_group(proc)
            proc.stdout.close()
            proc.stderr.close()
        return bytes(bufs[out_fd]), bytes(bufs[err_fd]), truncated, timed_out, over_memory


_limiters: dict[str | None, MemoryLimiter] = {}
_limiters_lock = threading.Lock()


def _detect_memory_limiter(explicit: str | None) -> MemoryLimiter:
    """:func:`assay.evolve.cgroup.detect`, once per process and cgroup asked for (it makes a test group)."""
    key = explicit or os.environ.get(CGROUP_ENV_VAR)
    with _limiters_lock:
        if key not in _limiters:
            limiter = detect(key)
            if limiter.by == "rlimit_as":
                limiter = replace(limiter, note=f"{limiter.note}; the memory of all the run's processes together is "
                                                f"checked every {MEMORY_POLL_SECONDS:g} s by the parent")
            _limiters[key] = limiter
        return _limiters[key]


def _tree_memory_mb(root: int) -> float:
    """Private and shared-memory resident size (``RssAnon`` + ``RssShmem``) of ``root`` and all its descendants, in
    MB, read from /proc (a sandbox's processes all descend from bwrap: its PID namespace's init reaps orphans)."""
    total_kb = 0
    stack, seen = [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("RssAnon:", "RssShmem:")):
                        total_kb += int(line.split()[1])
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):  # the process ended meanwhile
            continue
    return total_kb / 1024


def _minimal_dev() -> list[str]:
    """bwrap options for a small read-only /dev: four devices, the fd links, /dev/shm pointing into /tmp."""
    args = ["--size", str(64 * 1024), "--perms", "0755", "--tmpfs", "/dev"]
    for name in DEVICES:
        args += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("shm", "/tmp")):
        args += ["--symlink", target, f"/dev/{name}"]
    return args


def _nul_joined(options: Sequence[str]) -> bytes:
    """``--args`` format: each option NUL-terminated (an option holding a NUL would be split: refused)."""
    if any("\x00" in o for o in options):
        raise ValueError("sandbox options (env values, paths) must not contain NUL characters")
    return b"".join(os.fsencode(o) + b"\x00" for o in options)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill bwrap (its process group); bwrap's PID-1 child dies with it (``--die-with-parent``), and with PID 1 the
    kernel kills every other process of the sandbox's PID namespace."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _classify(returncode: int | None, status_json: bytes, out: bytes, err: bytes, truncated: bool, timed_out: bool,
              wall: float, limits: Limits, memory_exceeded: bool = False, memory_by: str = "rlimit_as") -> RunResult:
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    child_started = False
    exit_code: int | None = None
    for line in status_json.decode("utf-8", "replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if "child-pid" in doc:
            child_started = True
        if "exit-code" in doc:
            exit_code = int(doc["exit-code"])

    def result(status: str, detail: str = "") -> RunResult:
        return RunResult(status, exit_code, stdout, stderr, round(wall, 4), truncated, detail)

    if truncated:
        return result("output_limit", f"more than {limits.output_bytes} bytes on stdout or stderr")
    if timed_out:
        return result("timeout", f"wall clock > {limits.wall_seconds} s")
    if not child_started:
        return result("sandbox_error", stderr.strip()[-500:] or f"bwrap exited with {returncode}")
    if exit_code is None:
        exit_code = returncode
    memory = (f"memory > {limits.memory_mb} MB (cgroup memory.max)" if memory_by == "cgroup"
              else f"address space > {limits.memory_mb} MB")
    if memory_exceeded:  # OOM kill in the run's cgroup, or the host's watchdog
        return result("memory_limit", f"memory > {limits.memory_mb} MB (cgroup memory.max; OOM-killed)"
                      if memory_by == "cgroup" else
                      f"memory of all the run's processes > {limits.memory_mb} MB (killed by the host's watchdog)")
    if exit_code == 0:
        return result("ok")
    if exit_code in (126, 127) and stderr.startswith("prlimit: failed to execute"):
        return result("sandbox_error", stderr.strip()[:300])
    if exit_code is not None and exit_code > 128:
        sig = exit_code - 128
        if sig == signal.SIGXCPU:
            return result("cpu_limit", f"CPU time > {limits.cpu_seconds} s")
        if sig == signal.SIGXFSZ:
            return result("file_size_limit", f"file larger than {limits.file_size_mb} MB")
        if sig == signal.SIGKILL and not any(m in stderr for m in OUT_OF_MEMORY_MARKERS):
            return result("killed", "SIGKILL (CPU hard limit or out of memory)")
        if sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGSYS, signal.SIGKILL):
            if any(m in stderr for m in OUT_OF_MEMORY_MARKERS):
                return result("memory_limit", memory)
            return result("killed", _signal_name(sig))
    tail = stderr[-2000:]
    if any(m in tail for m in OUT_OF_MEMORY_MARKERS):  # MemoryError, and mmap/fork failing with ENOMEM
        return result("memory_limit", memory)
    if "[Errno 27] File too large" in tail:  # Python ignores SIGXFSZ: the write fails with EFBIG instead
        return result("file_size_limit", f"file larger than {limits.file_size_mb} MB")
    return result("error", f"exit code {exit_code}")
