"""Runs on object storage: `assay run -i s3://… -o s3://…` against a real S3 server (moto's, a separate process on
loopback), with credentials and endpoint from the usual AWS environment variables. Every file of a run (output,
stages, rejected/, markers, stats, report) stays on S3; nothing lands on the local disk; memory:// is refused where
worker processes cannot see it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from assay.core.record import stable_id
from assay.core.recipe import Recipe
from testutil import ROOT, SAMPLE, assay_cli, free_port, moto_s3_server, read_output

QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
WARCS = sorted(SAMPLE.glob("*.warc.gz"))[:2]  # two of the four bundled WARC files: two shards, a few seconds a run
BUCKET = "assay-test"
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A moto S3 server on a free port; the AWS_* variables point every client (this process and `assay run`
    subprocesses) at it. Yields an s3fs filesystem; the bucket holds the WARC files under in/."""
    saved = {k: os.environ.get(k) for k in (*AWS_KEYS, "AWS_ENDPOINT_URL", "XDG_CACHE_HOME")}
    try:
        with moto_s3_server() as endpoint:
            os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                               # what a remote run keeps on this machine goes to the test's folder, not ~/.cache
                               "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))})
            import s3fs

            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            fs.mkdir(BUCKET)
            for w in WARCS:
                fs.put(str(w), f"{BUCKET}/in/{w.name}")
            yield fs
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The same run on the local disk: what every S3 run must give."""
    d = tmp_path_factory.mktemp("local")
    for w in WARCS:
        (d / "in").mkdir(exist_ok=True)
        (d / "in" / w.name).write_bytes(w.read_bytes())
    assay_cli("run", str(QUICKSTART), "-i", str(d / "in"), "-o", str(d / "out"), "-w", "2", "--no-report")
    out = read_output(d / "out")
    assert len(out) > 10
    return out


def _s3_ids(local: list[dict]) -> set[str]:
    """The ids the local run's records get when their input file is read from the bucket (ids are of (source,
    offset))."""
    return {stable_id(f"s3://{BUCKET}/in/{Path(r['meta']['source']).name}", r["meta"]["offset"]) for r in local}


def _same_records(got: list[dict], local: list[dict]) -> None:
    def key(r: dict) -> tuple:
        return Path(r["meta"]["source"]).name, r["meta"]["offset"]

    def comparable(r: dict) -> tuple:
        return key(r), r["hash"], r["content"], r["signals"], r["lineage"]

    assert {r["id"] for r in got} == _s3_ids(local)
    assert sorted(map(comparable, got)) == sorted(map(comparable, local))
    assert all(r["meta"]["source"].startswith(f"s3://{BUCKET}/in/") for r in got)


def _listing(fs, prefix: str) -> list[str]:  # noqa: ANN001
    fs.invalidate_cache()
    return [p.removeprefix(f"{BUCKET}/{prefix}/") for p in fs.find(f"{BUCKET}/{prefix}")]


def _check_run_on_s3(fs, prefix: str, workdir: Path, local: list[dict]) -> dict:  # noqa: ANN001
    files = _listing(fs, prefix)
    assert ".assay/run.json" in files and "stats.json" in files and "errors.jsonl" in files
    assert "README.md" in files and "recipe.yaml" in files and any(f.startswith("data/train-") for f in files)
    assert not any(f.startswith(".assay/stages/") for f in files)  # removed once the run completed
    assert any(f.startswith("rejected/part-") for f in files)
    assert any(f.startswith(".assay/markers/reduce-s0") for f in files)
    # the near-dedup state is in the run folder on S3, where every worker of every machine sees it (was: on the
    # local disk of the machine, under $XDG_CACHE_HOME)
    state = [f for f in files if f.startswith(".assay/state/") and "-minhash_dedup/" in f]
    assert any("/shard-00001-part-0000.band_keys.npy" in f for f in state), files
    assert any(f.endswith("/decisions-00001.npz") for f in state) and any(f.endswith("/_reduce-files.json")
                                                                          for f in state)
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "assay" / "state").exists()
    assert list(workdir.iterdir()) == [], "the run wrote to the local disk"
    _same_records(read_output(f"s3://{BUCKET}/{prefix}"), local)
    stats = orjson.loads(fs.cat_file(f"{BUCKET}/{prefix}/stats.json"))
    assert stats["output"]["records"] == len(local)
    return stats


def test_run_to_an_existing_s3_folder_keeps_every_file_on_s3(s3, local_run: list[dict], tmp_path: Path):
    # the prefix exists as the S3 console makes folders: an empty "out/" object (was: _stages/ and rejected/ written
    # to ./bucket/out on the local disk, "0 records", exit 0)
    s3.pipe(f"{BUCKET}/existing/", b"")
    p = assay_cli("run", str(QUICKSTART), "-i", f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/existing", "-w", "2",
                  cwd=tmp_path)
    assert f"{len(local_run)} records" in p.stderr
    assert f"report: s3://{BUCKET}/existing/report.html" in p.stderr
    _check_run_on_s3(s3, "existing", tmp_path, local_run)
    assert "report.html" in _listing(s3, "existing")
    # inspect shows the run's output, not the first file below the prefix (a stages record, before pii)
    p = assay_cli("inspect", f"s3://{BUCKET}/existing", "-n", "1", "--full")
    shown = orjson.loads(p.stdout)
    assert shown["lineage"][-1]["step"] == "pii" and shown["id"] in {r["id"] for r in read_output(
        f"s3://{BUCKET}/existing")}


def test_run_to_a_new_s3_prefix(s3, local_run: list[dict], tmp_path: Path):
    # was: FileNotFoundError from fs.ls on the prefix, a traceback
    assay_cli("run", str(QUICKSTART), "-i", f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/new/run", "-w", "2",
              "--no-report", cwd=tmp_path)
    stats = _check_run_on_s3(s3, "new/run", tmp_path, local_run)
    assert stats["input"]["files"] == len(WARCS)

    # --overwrite with fewer inputs: the near-dedup state of the old run (in its .assay/state/) goes too (was: "minhash_dedup:
    # reduce expected the collect state of shards 0..0 …; unexpected shards: [1]")
    one = f"s3://{BUCKET}/in/{WARCS[0].name}"
    p = assay_cli("run", str(QUICKSTART), "-i", one, "-o", f"s3://{BUCKET}/new/run", "-w", "1", "--overwrite",
                  "--no-report", cwd=tmp_path)
    out = read_output(f"s3://{BUCKET}/new/run")
    stats = orjson.loads(s3.cat_file(f"{BUCKET}/new/run/stats.json"))
    assert stats["input"]["files"] == 1 and stats["output"]["records"] == len(out) > 0
    assert {r["meta"]["source"] for r in out} == {one}
    assert not any(f.startswith(".assay/markers/s0-00001") for f in _listing(s3, "new/run"))
    assert list(tmp_path.iterdir()) == []


def test_ray_executor_writes_to_s3(s3, local_run: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from assay.run.executor import RayExecutor

    monkeypatch.chdir(tmp_path)  # Ray's workers start in this folder: nothing may appear in it
    stats = RayExecutor(2).run(Recipe.from_yaml(QUICKSTART), [f"s3://{BUCKET}/in/"], f"s3://{BUCKET}/ray")
    assert stats["executor"] == "ray"
    _check_run_on_s3(s3, "ray", tmp_path, local_run)


def test_resume_on_s3_after_kill_gives_the_uninterrupted_output(s3, local_run: list[dict], tmp_path: Path):
    exe = str(Path(sys.executable).parent / "assay")
    proc = subprocess.Popen([exe, "run", str(QUICKSTART), "-i", f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/killed",
                             "-w", "1", "--no-report"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path.parent / "killed.log", "w"), start_new_session=True)
    try:
        deadline = time.time() + 120
        while not any(f.startswith(".assay/markers/s0-") for f in _listing(s3, "killed")):
            assert proc.poll() is None and time.time() < deadline, "the run ended before its first job finished"
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    done = [f for f in _listing(s3, "killed") if f.startswith(".assay/markers/")]
    assert "stats.json" not in _listing(s3, "killed") and 1 <= len(done) < 2 * len(WARCS) + 1
    assay_cli("run", str(QUICKSTART), "-i", f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/killed", "-w", "2",
              "--no-report", cwd=tmp_path)
    _check_run_on_s3(s3, "killed", tmp_path, local_run)


def test_memory_output_works_in_one_process_and_is_refused_for_workers(tmp_path: Path):
    name = f"assay-test-{uuid.uuid4().hex[:8]}"
    args = ("run", str(QUICKSTART), "-i", str(WARCS[0]), "-o", f"memory://{name}")
    # one process: the run writes into memory (was: a folder /NAME on the local disk)
    p = assay_cli(*args, "-w", "1", cwd=tmp_path)
    assert "records in 1 files" in p.stderr and f"report: memory:///{name}/report.html" in p.stderr
    assert not Path(f"/{name}").exists() and list(tmp_path.iterdir()) == []
    # worker processes cannot see this process's memory: a one-line error, nothing run
    for more in (("-w", "2"), ("-e", "ray", "-w", "1")):
        p = assay_cli(*args, *more, cwd=tmp_path, check=False)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "lives in the memory of one process" in p.stderr and "Traceback" not in p.stderr
        assert not Path(f"/{name}").exists()


def test_unreachable_storage_is_a_one_line_error(s3, tmp_path: Path):
    no_keys = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    no_keys["HOME"] = str(tmp_path)  # no ~/.aws profile either
    no_keys["AWS_EC2_METADATA_DISABLED"] = "true"  # nor an EC2 instance role (botocore would ask for one)
    # botocore retries a refused connection for half a minute: one attempt is enough here
    wrong_port = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    cases = [
        (["-i", f"s3://{BUCKET}/in/", "-o", str(tmp_path / "out")], no_keys,
         f"cannot read the input s3://{BUCKET}/in/: Unable to locate credentials"),
        (["-i", str(WARCS[0]), "-o", f"s3://{BUCKET}/nokeys"], no_keys,
         f"cannot write to --output s3://{BUCKET}/nokeys: Unable to locate credentials"),
        (["-i", str(WARCS[0]), "-o", f"s3://{BUCKET}/noserver"], wrong_port,
         f"cannot write to --output s3://{BUCKET}/noserver: Could not connect to the endpoint URL"),
    ]
    for args, env, message in cases:
        p = assay_cli("run", str(QUICKSTART), *args, "--no-report", env=env, cwd=tmp_path, check=False)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "bucket").exists()


DUP_RECIPE = """name: dup
input: {format: jsonl}
output: {format: jsonl.gz}
steps:
  - exact_dedup
  - test_exact_dedup
"""


def test_state_dir_on_s3_holds_the_global_steps_state(s3, tmp_path: Path):
    """--state-dir URL: the state of the global steps (a built-in dedup, and a user's own global step whose apply
    reads whatever its reduce wrote) goes under URL/<run key>/, on S3; a new run (--overwrite) starts it afresh."""
    recipe = tmp_path / "dup.yaml"
    recipe.write_text(DUP_RECIPE)
    texts = [f"document {i % 7} of the corpus" for i in range(30)]  # 7 distinct texts in 3 files
    for k in range(3):
        s3.pipe(f"{BUCKET}/dup/in-{k}.jsonl", b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts[k::3]))
    work = tmp_path / "work"
    work.mkdir()
    args = ("run", str(recipe), "-i", f"s3://{BUCKET}/dup/", "-o", f"s3://{BUCKET}/dup-out", "--state-dir",
            f"s3://{BUCKET}/state", "--no-report")
    assay_cli(*args, "-w", "1", cwd=work)
    out = read_output(f"s3://{BUCKET}/dup-out")
    assert sorted(r["content"] for r in out) == sorted(set(texts))
    (key,) = {f.split("/")[0] for f in _listing(s3, "state")}
    state = _listing(s3, f"state/{key}")
    assert {f.split("/")[0] for f in state} == {"00-exact_dedup", "01-test_exact_dedup"}
    assert "01-test_exact_dedup/keep.json" in state and "01-test_exact_dedup/shard-00002.json" in state
    assert not any(f.startswith((".assay/state/", "_state/")) for f in _listing(s3, "dup-out"))
    assert list(work.iterdir()) == []

    # a new run into the same output (fewer shards): the old run's state is gone, not mixed in
    assay_cli(*args[:3], f"s3://{BUCKET}/dup/in-0.jsonl", *args[4:], "-w", "1", "--overwrite", cwd=work)
    assert sorted(r["content"] for r in read_output(f"s3://{BUCKET}/dup-out")) == sorted(set(texts[0::3]))
    assert "01-test_exact_dedup/shard-00002.json" not in _listing(s3, f"state/{key}")


SLOW_RECIPE = """name: slow
input: {format: warc}
output: {format: jsonl.gz}
batch_size: 10
steps:
  - extract: {engine: resiliparse}
  - test_slow: {seconds_per_batch: 0.25}
  - minhash_dedup
"""


def test_output_bucket_deleted_mid_run_is_one_line(s3, tmp_path: Path):
    """The output bucket disappears while a job runs (a lifecycle rule, a colleague): the run stops with one line,
    exit 2 (was: an s3fs traceback). Which line depends on the moment: the running job's next read or delete fails
    ("job … failed: FileNotFoundError: The specified bucket does not exist"), or, if its writes came first (s3fs
    creates a missing bucket again on write), the dedup's reduce finds the state of shard 0 gone and names it on S3,
    not in the job's temporary copy."""
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(SLOW_RECIPE)
    s3.mkdir("assay-doomed")
    exe = str(Path(sys.executable).parent / "assay")
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([exe, "run", str(recipe), "-i", f"s3://{BUCKET}/in/", "-o", "s3://assay-doomed/run",
                                 "-w", "1", "--no-report"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 120
            while not any(f.startswith("assay-doomed/run/.assay/markers/s0-") for f in _find(s3, "assay-doomed")):
                assert proc.poll() is None and time.time() < deadline, log.read_text()
                time.sleep(0.1)
            s3.rm("assay-doomed", recursive=True)  # the objects and the bucket
            assert proc.wait(120) == 2, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    text = log.read_text()
    assert "Traceback" not in text, text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("error:")]
    in_job = (f"job s0-00001 (segment 1/2, s3://{BUCKET}/in/{WARCS[1].name}) failed: FileNotFoundError: "
              f"The specified bucket does not exist")
    at_reduce = ("reduce expected the collect state of shards 0..1 in s3://assay-doomed/run/.assay/state/02-minhash_dedup; "
                 "missing: [0]")
    assert in_job in line or at_reduce in line, line


def test_unreachable_hugging_face_hub_is_a_one_line_error(tmp_path: Path):
    # hf:// (huggingface_hub's filesystem) raises httpx's ConnectError, not an OSError (was: a traceback)
    # without HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE (either puts huggingface_hub offline), which the embedding code
    # sets in the suite's own process before this test runs
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    p = assay_cli("run", str(QUICKSTART), "-i", "hf://datasets/org/crawl/a.warc.gz", "-o", str(tmp_path / "out"),
                  "--no-report", env=env, cwd=tmp_path, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "error: cannot read the input hf://datasets/org/crawl/a.warc.gz: [Errno 111] Connection refused" in p.stderr
    assert not (tmp_path / "out").exists()
    # offline, the Hub is not asked: the one line says why nothing matched (it said only "no input files match")
    p = assay_cli("run", str(QUICKSTART), "-i", "hf://datasets/org/crawl/a.warc.gz", "-o", str(tmp_path / "out"),
                  "--no-report", env={**env, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "no input files match 'hf://datasets/org/crawl/a.warc.gz' (HF_HUB_OFFLINE is set" in p.stderr


def _find(fs, bucket: str) -> list[str]:  # noqa: ANN001
    fs.invalidate_cache()
    try:
        return fs.find(bucket)
    except FileNotFoundError:
        return []
