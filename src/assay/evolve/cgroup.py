"""The code sandbox's memory limit through a delegated cgroup v2, where the machine has one.

``RLIMIT_AS`` caps a process's *address space*, not the memory it holds: it does not see pages held outside the
address space (tmpfs files, pipe buffers) and it refuses programs that merely reserve a lot of virtual memory. A
cgroup v2 ``memory.max`` caps what the sandbox really uses, all its processes together, and the kernel OOM-kills
inside that group only. It needs a *delegated* cgroup v2: a directory of the cgroup v2 hierarchy we may write to,
whose ``cgroup.subtree_control`` enables the ``memory`` controller for its children. Where to look:

* the directory given explicitly (``Sandbox(cgroup=...)`` or the ``ASSAY_SANDBOX_CGROUP`` environment variable),
  e.g. one systemd delegates to you: start ``systemd-run --user -p Delegate=yes --scope -- bash``, and in that
  shell (a cgroup with processes cannot enable controllers for children, so the shell moves to a leaf first)::

      CG=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)
      mkdir $CG/shell && echo $$ > $CG/shell/cgroup.procs && echo +memory > $CG/cgroup.subtree_control
      export ASSAY_SANDBOX_CGROUP=$CG

* else the cgroup this process runs in and its ancestors (a systemd user session delegates
  ``user@UID.service`` to the user; the root cgroup of a VM run as root).

:func:`detect` tries for real (makes and removes a test group) and says why when there is none (in containers often
not: the memory controller belongs to the host, or cgroup v1). Each sandboxed run then gets its own child group
(:class:`RunGroup`): ``memory.max`` = the limit, ``memory.swap.max`` = 0, ``memory.oom.group`` = 1 (an OOM kill
ends the whole run), removed after the run; its ``memory.events`` say whether the kernel OOM-killed something in it.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "ASSAY_SANDBOX_CGROUP"
_counter = itertools.count()
_lock = threading.Lock()


@dataclass(frozen=True)
class MemoryLimiter:
    """How the sandbox's memory is limited: ``by`` is ``"cgroup"`` (``parent`` is the delegated cgroup v2
    directory) or ``"rlimit_as"``; ``note`` says why (and, for the fallback, why no cgroup)."""

    by: str
    note: str
    parent: str | None = None

    def new_group(self, memory_mb: int) -> "RunGroup":
        assert self.parent is not None, "new_group needs a cgroup limiter"
        return RunGroup.create(Path(self.parent), memory_mb)


class RunGroup:
    """One sandboxed run's child cgroup."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, parent: Path, memory_mb: int) -> "RunGroup":
        with _lock:
            name = f"assay-sandbox-{os.getpid()}-{next(_counter)}"
        path = parent / name
        path.mkdir()
        group = cls(path)
        if not (path / "memory.max").exists():  # made by the kernel when the parent enables memory for children
            group.remove()
            raise OSError(f"no memory.max in a new group under {parent}: not a cgroup v2 with the memory controller")
        try:
            (path / "memory.max").write_text(str(memory_mb * 1024 * 1024))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):  # no swap; OOM ends the run
                if (path / name).exists():
                    (path / name).write_text(value)
        except OSError:
            group.remove()
            raise
        return group

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    def oom_killed(self) -> bool:
        """True when the kernel OOM-killed a process of this group (``memory.events``: ``oom_kill``)."""
        try:
            for line in (self.path / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            return False
        return False

    def remove(self, timeout: float = 2.0) -> None:
        """Remove the group once its processes are gone (kills leftovers with ``cgroup.kill`` where it exists)."""
        deadline = time.monotonic() + timeout
        killed = False
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if not killed and (self.path / "cgroup.kill").exists():
                    try:
                        (self.path / "cgroup.kill").write_text("1")
                    except OSError:
                        pass
                    killed = True
                if time.monotonic() > deadline:
                    return  # an empty leftover group is harmless; it is named after our pid
                time.sleep(0.01)


def cgroup2_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of the cgroup v2 hierarchy (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified`` on hybrid
    systems)."""
    out = []
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            out.append(left.split()[4].replace("\\040", " "))
    return out


def own_cgroup(proc_cgroup: str = "/proc/self/cgroup") -> str | None:
    """This process's path in the cgroup v2 hierarchy (the ``0::`` line), e.g. ``/user.slice/...``."""
    try:
        for line in Path(proc_cgroup).read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].strip() or "/"
    except OSError:
        return None
    return None


def _usable(parent: Path) -> str | None:
    """``None`` when sandbox groups can be made under ``parent`` (tried for real), else why not."""
    real = os.path.realpath(parent)
    if not any(real == m or real.startswith(m.rstrip("/") + "/") for m in cgroup2_mounts()):
        return f"{parent} is not in a cgroup v2 hierarchy (mounted: {', '.join(cgroup2_mounts()) or 'none'})"
    try:
        controllers = (parent / "cgroup.subtree_control").read_text().split()
    except OSError as e:
        return f"{parent}: {e.strerror or e}"
    if "memory" not in controllers:
        return f"{parent} does not enable the memory controller for its children (subtree_control: " \
               f"{' '.join(controllers) or 'empty'})"
    if not os.access(parent, os.W_OK) or not os.access(parent / "cgroup.procs", os.W_OK):
        return f"{parent} is not writable by uid {os.geteuid()}"
    try:
        group = RunGroup.create(parent, 64)
    except OSError as e:
        return f"cannot make a group under {parent}: {e.strerror or e}"
    group.remove()
    return None


def detect(explicit: str | None = None) -> MemoryLimiter:
    """The best memory limit available: a cgroup under ``explicit`` (or ``$ASSAY_SANDBOX_CGROUP``), else under this
    process's own cgroup or an ancestor, else ``RLIMIT_AS`` with the reason."""
    explicit = explicit or os.environ.get(ENV_VAR) or None
    if explicit:
        why = _usable(Path(explicit))
        if why is None:
            return MemoryLimiter("cgroup", f"cgroup v2 memory.max under {explicit} (given)", explicit)
        return MemoryLimiter("rlimit_as", f"RLIMIT_AS (address space): the cgroup given is unusable: {why}")
    mounts = cgroup2_mounts()
    mine = own_cgroup()
    if not mounts or mine is None:
        return MemoryLimiter("rlimit_as", "RLIMIT_AS (address space): no cgroup v2 hierarchy on this machine")
    reasons = []
    for mount in mounts:
        path = Path(mount + (mine if mine != "/" else ""))
        root = Path(mount)
        while True:
            why = _usable(path)
            if why is None:
                return MemoryLimiter("cgroup", f"cgroup v2 memory.max under {path}", str(path))
            reasons.append(why)
            if path == root or not str(path).startswith(str(root)):
                break
            path = path.parent
    return MemoryLimiter("rlimit_as", "RLIMIT_AS (address space): no delegated cgroup v2 with the memory "
                                      f"controller ({reasons[0] if reasons else 'none found'})")
