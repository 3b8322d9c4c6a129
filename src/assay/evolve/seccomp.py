"""A small seccomp filter for the code sandbox, compiled to classic BPF by hand (no libseccomp needed).

bubblewrap loads a compiled filter from a file descriptor (``--seccomp FD``) just before it runs the sandboxed
command, after ``PR_SET_NO_NEW_PRIVS``. The sandbox already has no network, no capabilities and a read-only view of
the system; this filter removes kernel interfaces that untrusted code has no business calling and that are the usual
stepping stones of kernel exploits and sandbox escapes:

* namespaces and mounts: ``unshare``, ``setns``, ``mount`` and the new mount API, ``pivot_root``, ``chroot``, and
  ``clone`` with any ``CLONE_NEW*`` flag; ``clone3`` answers ``ENOSYS`` (its flags live in memory a BPF filter
  cannot read), which makes glibc fall back to ``clone``, whose flags the filter does check;
* debugging other processes: ``ptrace``, ``process_vm_readv/writev``;
* kernel keyrings, eBPF, perf events, userfaultfd, io_uring (large attack surfaces);
* modules, kexec, reboot, swap, accounting, clock setting, ``open_by_handle_at``;
* memory that lives outside a process's address space, which ``RLIMIT_AS`` (the memory limit where no cgroup is
  delegated) would not count: SysV shared memory and message queues (``shmget``, ``msgget``: segments outlive
  their mapping until the sandbox ends) and ``memfd_create``/``memfd_secret`` (anonymous files filled by
  ``write``).

Denied calls fail with ``EPERM`` so a program sees an ordinary error. A call made with another ABI than the native
one (i386 ``int 0x80`` or x32 on x86-64) kills the process: denying by number only works for one numbering.

Filters exist for x86-64 and aarch64; on another architecture :func:`build_filter` returns ``None`` and the sandbox
runs without this extra layer (it says so in :meth:`assay.evolve.sandbox.Sandbox.describe`).
"""

from __future__ import annotations

import errno
import platform
import struct

# -- classic BPF opcodes and seccomp constants (linux/filter.h, linux/seccomp.h, linux/audit.h) -------------------
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
BPF_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# offsets in struct seccomp_data {int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];}
OFF_NR, OFF_ARCH, OFF_ARG0_LOW = 0, 4, 16  # little-endian: the low half of args[0] comes first

X32_SYSCALL_BIT = 0x40000000
CLONE_NEW_FLAGS = (0x00020000  # CLONE_NEWNS
                   | 0x02000000  # CLONE_NEWCGROUP
                   | 0x04000000  # CLONE_NEWUTS
                   | 0x08000000  # CLONE_NEWIPC
                   | 0x10000000  # CLONE_NEWUSER
                   | 0x20000000  # CLONE_NEWPID
                   | 0x40000000)  # CLONE_NEWNET

# syscalls shared by the generic table (aarch64) and x86-64 from number 424 on
_NEW_API = {"pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
            "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
            "clone3": 435, "mount_setattr": 442, "memfd_secret": 447}

ARCHES: dict[str, dict[str, object]] = {
    "x86_64": {
        "audit_arch": 0xC000003E,
        "x32": True,
        "clone": 56,
        "deny": {"ptrace": 101, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272,
                 "setns": 308, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
                 "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246, "kexec_file_load": 320,
                 "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167,
                 "swapoff": 168, "acct": 163, "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305,
                 "adjtimex": 159, "open_by_handle_at": 304, "name_to_handle_at": 303, "process_vm_readv": 310,
                 "process_vm_writev": 311, "quotactl": 179, "lookup_dcookie": 212,
                 "vhangup": 153, "syslog": 103, "shmget": 29, "msgget": 68, "memfd_create": 319,
                 **{k: v for k, v in _NEW_API.items() if k != "clone3" and k != "pidfd_send_signal"}},
    },
    "aarch64": {
        "audit_arch": 0xC00000B7,
        "x32": False,
        "clone": 220,
        "deny": {"ptrace": 117, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97,
                 "setns": 268, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
                 "perf_event_open": 241, "userfaultfd": 282, "kexec_load": 104, "kexec_file_load": 294,
                 "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224,
                 "swapoff": 225, "acct": 89, "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266,
                 "adjtimex": 171, "open_by_handle_at": 265, "name_to_handle_at": 264, "process_vm_readv": 270,
                 "process_vm_writev": 271, "quotactl": 60, "lookup_dcookie": 18,
                 "vhangup": 58, "syslog": 116, "shmget": 194, "msgget": 186, "memfd_create": 279,
                 **{k: v for k, v in _NEW_API.items() if k != "clone3" and k != "pidfd_send_signal"}},
    },
}
CLONE3 = _NEW_API["clone3"]


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build_filter(machine: str | None = None) -> bytes | None:
    """The compiled filter (an array of ``struct sock_filter``) for ``machine`` (default: this one), or ``None``
    when there is no syscall table for it."""
    arch = ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    prog = [
        _insn(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        _insn(BPF_JEQ_K, 1, 0, int(arch["audit_arch"])),  # type: ignore[arg-type]
        _insn(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),  # another ABI: kill
        _insn(BPF_LD_W_ABS, 0, 0, OFF_NR),
    ]
    if arch["x32"]:
        prog += [_insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT), _insn(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS)]
    for nr in sorted(set(arch["deny"].values())):  # type: ignore[union-attr]
        prog += [_insn(BPF_JEQ_K, 0, 1, nr), _insn(BPF_RET_K, 0, 0, eperm)]
    prog += [
        _insn(BPF_JEQ_K, 0, 1, CLONE3),
        _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
        _insn(BPF_JEQ_K, 1, 0, int(arch["clone"])),  # type: ignore[arg-type]
        _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),  # not clone: allowed
        _insn(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LOW),
        _insn(BPF_JSET_K, 0, 1, CLONE_NEW_FLAGS),
        _insn(BPF_RET_K, 0, 0, eperm),
        _insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return b"".join(prog)


def denied_syscalls(machine: str | None = None) -> list[str]:
    """Names of the system calls the filter denies on ``machine`` (for reports)."""
    arch = ARCHES.get(machine or platform.machine())
    if arch is None:
        return []
    return sorted(arch["deny"]) + ["clone(CLONE_NEW*)", "clone3 (ENOSYS)"]  # type: ignore[arg-type]
