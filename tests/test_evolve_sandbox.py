"""The code sandbox: every escape attempt of the issue fails safely (judged from the host), and ordinary programs
run with their files, stdin and a private writable scratch dir."""

from __future__ import annotations

import os
import platform
import struct
import time

import pytest

from assay.evolve import seccomp
from assay.evolve.escapes import ATTACKS, run_escape_suite
from assay.evolve.sandbox import Limits, Sandbox

SB = Sandbox(Limits(cpu_seconds=5, wall_seconds=10, memory_mb=1024, processes=32))


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_escape_attempt_is_contained(attack: str) -> None:
    (result,) = run_escape_suite(SB, only=[attack])
    assert result.contained, f"{result.name}: {result.status}: {result.evidence}"


def test_escape_statuses_name_the_limit_that_stopped_them() -> None:
    results = {r.name: r for r in run_escape_suite(SB, only=["allocate_4gb", "print_1gb", "network"])}
    assert results["allocate 4 GB"].status == "memory_limit"
    assert results["print 1 GB"].status == "output_limit"
    assert results["print 1 GB"].seconds < 5  # killed at the cap, not after printing a gigabyte
    assert results["open a socket to 127.0.0.1"].status == "error"
    assert "ConnectionRefusedError" in results["open a socket to 127.0.0.1"].evidence or \
        "Network is unreachable" in results["open a socket to 127.0.0.1"].evidence


def test_files_stdin_scratch_and_exit_codes() -> None:
    code = """
import sys, os, json
data = sys.stdin.read()
helper = open("pkg/helper.txt").read()
with open("out.txt", "w") as f:
    f.write(data.upper())
with open("/tmp/t.txt", "w") as f:
    f.write("tmp ok")
print(json.dumps({"cwd": os.getcwd(), "helper": helper, "out": open("out.txt").read(),
                  "tmp": open("/tmp/t.txt").read(), "uid": os.getuid(), "home": os.environ.get("HOME"),
                  "env_leak": "ASSAY_STEP_MODULES" in os.environ}))
sys.exit(3)
"""
    r = SB.run_python(code, files={"pkg/helper.txt": "héllo"}, stdin="some input")
    assert r.status == "error" and r.exit_code == 3
    import json

    got = json.loads(r.stdout)
    assert got == {"cwd": "/sandbox", "helper": "héllo", "out": "SOME INPUT", "tmp": "tmp ok", "uid": 65534,
                   "home": "/sandbox", "env_leak": False}


def test_each_run_is_fresh() -> None:
    SB.run_python("open('left-behind.txt', 'w').write('x')")
    r = SB.run_python("import os; print(sorted(os.listdir('.')), os.listdir('/tmp'))")
    assert r.ok and r.stdout.strip() == "['main.py'] []"


def test_traceback_reaches_the_error_summary() -> None:
    r = SB.run_python("def f(x):\n    return x + 1\n\nassert f(1) == 3, 'f is wrong'\n")
    assert r.status == "error"
    assert "AssertionError: f is wrong" in r.error_summary()
    assert SB.run_python("print('ok')").error_summary() == ""


def test_file_size_limit() -> None:
    r = SB.run_python("open('big', 'wb').write(b'x' * (3 << 20))", limits=SB.limits.with_(file_size_mb=1))
    assert r.status == "file_size_limit"


def test_process_limit_counts_only_this_sandbox() -> None:
    """RLIMIT_NPROC is per user namespace: a sandbox can start close to `processes` children, never more, and two
    sandboxes running at once do not eat each other's allowance."""
    code = """
import os, time
n = 0
try:
    while True:
        pid = os.fork()
        if pid == 0:
            time.sleep(2)
            os._exit(0)
        n += 1
except OSError as e:
    print(n, e.errno)
"""
    limits = SB.limits.with_(processes=12)
    results = SB.run_many([(["/usr/bin/python3", "main.py"], {"main.py": code})] * 2, workers=2, limits=limits)
    for r in results:
        assert r.ok, r.stderr
        n, errno_ = map(int, r.stdout.split())
        assert errno_ == 11  # EAGAIN
        assert 6 <= n < 12


def test_bad_file_names_are_refused() -> None:
    for name in ("../x.py", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError):
            SB.run(["/usr/bin/true"], files={name: "x"})


def test_missing_interpreter_is_a_sandbox_error_not_a_crash() -> None:
    r = SB.run(["/usr/bin/does-not-exist"])
    assert r.status == "sandbox_error" and not r.ok


def test_binary_and_hostile_output_is_decoded() -> None:
    r = SB.run_python("import sys; sys.stdout.buffer.write(b'\\xff\\xfe\\x00ok\\xed\\xa0\\x80')")
    assert r.ok and "ok" in r.stdout and "\ufffd" in r.stdout


def test_startup_is_fast_enough_for_thousands_of_runs() -> None:
    SB.run_python("pass")
    t = time.perf_counter()
    for _ in range(5):
        assert SB.run_python("pass").ok
    per_run = (time.perf_counter() - t) / 5
    assert per_run < 1.0, per_run  # typically 0.05-0.1 s on an idle machine


def test_seccomp_filter_is_well_formed() -> None:
    prog = seccomp.build_filter("x86_64")
    assert prog is not None and len(prog) % 8 == 0
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    # first: load arch, compare with AUDIT_ARCH_X86_64, kill otherwise
    assert insns[0] == (seccomp.BPF_LD_W_ABS, 0, 0, seccomp.OFF_ARCH)
    assert insns[1][3] == 0xC000003E and insns[2] == (seccomp.BPF_RET_K, 0, 0, seccomp.SECCOMP_RET_KILL_PROCESS)
    # every jump stays inside the program and it ends by allowing
    for i, (code, jt, jf, _) in enumerate(insns):
        if code & 0x07 == 0x05:
            assert i + 1 + max(jt, jf) < len(insns)
    assert insns[-1] == (seccomp.BPF_RET_K, 0, 0, seccomp.SECCOMP_RET_ALLOW)
    assert seccomp.build_filter("sparc") is None
    assert "ptrace" in seccomp.denied_syscalls("aarch64")


def test_describe_lists_what_isolates() -> None:
    d = SB.describe()
    assert set(d["namespaces"]) >= {"user", "pid", "net", "mount"}
    assert "/sandbox" in d["writable"] and "/usr" in d["visible_read_only"]
    if platform.machine() in seccomp.ARCHES:
        assert "ptrace" in d["seccomp"]
    assert d["host_uid"] != 0 or os.geteuid() != 0


def test_no_file_descriptors_leak() -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    SB.run_python("pass")
    before = open_fds()
    for i in range(10):
        SB.run_python("print('x' * 100)", files={f"f{i}.txt": "data"}, stdin="in")
        with pytest.raises(ValueError):
            SB.run(["/usr/bin/true"], files={"../escape": "x"})
    SB.run(["/usr/bin/does-not-exist"])
    assert open_fds() == before
