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


# -- issue 14 §1: host data, /dev, memory --------------------------------------------------------------------------
def test_minimal_read_only_dev_and_shm_capped_by_scratch() -> None:
    """/dev holds four devices and links; /dev/shm is the private /tmp: POSIX shared memory and semaphores work, and
    writes stop at the scratch cap (ENOSPC) instead of filling host memory."""
    code = """
import errno, json, os
import multiprocessing as mp
from multiprocessing import shared_memory
lock = mp.Lock()
shm = shared_memory.SharedMemory(create=True, size=4096)
shm.buf[:2] = b"ok"
names = sorted(os.listdir("/dev"))
try:
    open("/dev/new", "w")
    dev = "written"
except OSError as e:
    dev = errno.errorcode[e.errno]
written = 0
try:
    with open("/dev/shm/fill", "wb") as f:
        for _ in range(40):
            f.write(b"x" * (1 << 20))
            f.flush()
            written += 1
except OSError as e:
    stop = errno.errorcode[e.errno]
print(json.dumps({"dev": names, "new": dev, "shm_mb": written, "stop": stop, "shm": bytes(shm.buf[:2]).decode(),
                  "in_tmp": "fill" in os.listdir("/tmp"), "null": open("/dev/urandom", "rb").read(8) != b""}))
shm.close()
shm.unlink()
"""
    r = SB.run_python(code, limits=SB.limits.with_(scratch_mb=8))
    assert r.ok, r.stderr
    import json

    got = json.loads(r.stdout)
    assert got["dev"] == ["fd", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"]
    assert got["new"] == "EROFS"
    assert got["stop"] == "ENOSPC" and 5 <= got["shm_mb"] <= 8
    assert got["shm"] == "ok" and got["in_tmp"] and got["null"]


def test_program_environment_is_only_the_sandbox_env() -> None:
    from assay.evolve.escapes import canary_in_environment
    from assay.evolve.sandbox import SANDBOX_ENV

    sb = Sandbox(SB.limits, env={"MY_SETTING": "1"})
    with canary_in_environment() as canary:
        r = sb.run_python("import os, json; print(json.dumps(dict(os.environ)))")
    assert r.ok and canary not in r.stdout
    import json

    assert json.loads(r.stdout) == {**SANDBOX_ENV, "MY_SETTING": "1", "PWD": "/sandbox"}


def test_mmap_enomem_is_a_memory_limit() -> None:
    """Issue 15 §5: an mmap beyond the limit fails with ENOMEM (OSError, not MemoryError): that is `memory_limit`."""
    r = SB.run_python("import mmap\nm = mmap.mmap(-1, 2 << 30)\n", limits=SB.limits.with_(memory_mb=512))
    assert r.status == "memory_limit", (r.status, r.stderr[-300:])
    assert "Cannot allocate memory" in r.stderr and "memory limit" in r.error_summary()


def test_execution_feedback_reports_mmap_enomem_as_memory_limit() -> None:
    from assay.evolve.execution import CodeChecker, CodeTask

    task = CodeTask(problem="p", solution="import mmap\ndef f():\n    return mmap.mmap(-1, 2 << 30)\n",
                    tests="assert f() is not None")
    (res,) = CodeChecker(Sandbox(SB.limits.with_(memory_mb=512))).check([task])
    assert res.status == "memory_limit"


def test_memory_limit_mechanism_is_reported() -> None:
    from assay.evolve import cgroup

    expected = cgroup.detect()
    d = SB.describe()["memory_limit"]
    assert d["by"] == expected.by and d["note"]
    assert SB.run_python("pass").memory_limit_by == expected.by
    if expected.by == "rlimit_as":  # say why no cgroup
        assert "RLIMIT_AS" in d["note"] and "cgroup" in d["note"]


def test_unusable_cgroup_falls_back_to_rlimit_as_with_the_reason(tmp_path) -> None:
    from assay.evolve import cgroup

    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")  # looks like one, but is not a cgroup fs
    limiter = cgroup.detect(str(tmp_path))
    assert limiter.by == "rlimit_as" and str(tmp_path) in limiter.note and "cgroup v2" in limiter.note
    assert not list(tmp_path.glob("assay-sandbox-*"))  # nothing left behind
    sb = Sandbox(SB.limits, cgroup=str(tmp_path / "missing"))
    assert sb.memory.by == "rlimit_as" and "missing" in sb.memory.note
    r = sb.run_python("x = bytearray(3 << 30)", limits=sb.limits.with_(memory_mb=256))
    assert r.status == "memory_limit" and r.memory_limit_by == "rlimit_as"


def test_cgroup_files_are_parsed(tmp_path) -> None:
    from assay.evolve import cgroup

    (tmp_path / "mountinfo").write_text(
        "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
        "31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:5 - cgroup cgroup rw,memory\n")
    (tmp_path / "cgroup").write_text("4:memory:/x\n0::/user.slice/user-1000.slice/session-2.scope\n")
    assert cgroup.cgroup2_mounts(str(tmp_path / "mountinfo")) == ["/sys/fs/cgroup"]
    assert cgroup.own_cgroup(str(tmp_path / "cgroup")) == "/user.slice/user-1000.slice/session-2.scope"


def test_memory_watchdog_lets_ordinary_multiprocess_programs_run() -> None:
    """Without a cgroup the host sums the memory of a run's processes; a pool of workers well under the limit runs."""
    code = """
from multiprocessing import Pool
def work(n):
    block = bytearray(20 << 20)
    return sum(block[::4096]) + n
if __name__ == "__main__":
    with Pool(4) as pool:
        print(sum(pool.map(work, range(8))))
"""
    r = SB.run_python(code, limits=SB.limits.with_(memory_mb=512))
    assert r.ok and r.stdout.strip() == "28", (r.status, r.detail, r.stderr[-300:])
