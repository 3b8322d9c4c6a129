"""A Ray cluster of two nodes on this machine: `ray start --head` and `ray start --address …`, each its own process
tree with its own temporary, cache and TMPDIR folders (as two machines have their own disks), and S3 (moto's server)
for input and output. The nodes know the S3 endpoint but hold no credentials: `assay run --ray-env` passes the
driver's. One cluster serves the whole module (Ray starts slowly).

- A web-text recipe with MinHash dedup gives the same ids on the cluster as on the local executor, its
  jobs ran on both nodes, and the dedup state went through S3 (with state on a node's local disk, the reduce on one
  node would miss what the other collected).
- A Ray worker process killed mid-job, and the whole second node killed mid-run: the run still gives that output,
  every record once.
- Nodes without credentials: one line naming the job and the node, no traceback.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from testutil import SAMPLE, assay_cli, free_port, moto_s3_server

# the web-text steps that matter here (extraction, a filter, MinHash dedup, PII), without the language model the
# quickstart loads in every new worker process
RECIPE = """name: ray-multinode
input: {format: warc}
output: {format: jsonl.gz}
batch_size: 10
steps:
  - extract: {engine: resiliparse}
  - gopher_quality
  - minhash_dedup
  - pii
"""
# the same with a pause in every batch before the dedup: time to kill something while a job runs
SLOW = RECIPE.replace("  - gopher_quality\n", "  - gopher_quality\n  - test_slow: {seconds_per_batch: 0.15}\n")
pytestmark = pytest.mark.slow  # a Ray cluster of two nodes starts in tens of seconds on a busy machine

WARCS = sorted(SAMPLE.glob("*.warc.gz"))[:2]  # two shards: one job per node and segment
BUCKET = "assay-ray"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
RAY_ENV = ("--ray-env", "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY")
RAY = str(Path(sys.executable).parent / "ray")
ASSAY = str(Path(sys.executable).parent / "assay")


# -- processes: the nodes are process trees this module started, and only those are ever signalled ----------------
def _parents() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    log: Path
    home: Path

    def job_workers(self) -> list[int]:
        """Ray worker processes of this node that are running an Assay job right now."""
        return [p for p in _tree(self.proc.pid) if _cmdline(p).startswith("ray::run_job")]

    def kill(self) -> None:
        """SIGKILL the node's whole process tree (raylet, object store, workers): the machine is gone."""
        for pid in reversed(_tree(self.proc.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)


def _start_node(name: str, args: list[str], env: dict[str, str], base: Path, ray_dir: Path) -> Node:
    """``ray start ARGS --block`` with the node's own home, cache, TMPDIR and Ray session folder (``ray_dir``: short,
    Ray's socket paths must fit in 107 bytes). A second attempt if the first times out: Ray gives a node 30 s to
    register, which a machine shared with other test runs does not always meet."""
    home = base / name
    for sub in ("home", "cache", "tmp"):
        (home / sub).mkdir(parents=True)
    node_env = {**env, "HOME": str(home / "home"), "XDG_CACHE_HOME": str(home / "cache"), "TMPDIR": str(home / "tmp")}
    for attempt in (1, 2):
        ports = random.sample(range(20000, 60000, 50), 1)[0]
        log = home / f"ray-{attempt}.log"
        proc = subprocess.Popen(
            [RAY, "start", *args, "--block", "--num-cpus", "1", "--object-store-memory", "100000000",
             "--node-ip-address", "127.0.0.1", "--temp-dir", str(ray_dir), "--disable-usage-stats",
             "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
             "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
             "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
             "--min-worker-port", str(ports), "--max-worker-port", str(ports + 49)],
            env=node_env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, proc, log, home)
        deadline = time.time() + 120
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.time() > deadline:
                node.kill()
                if attempt == 2:
                    raise RuntimeError(f"ray start ({name}) failed:\n{log.read_text()[-3000:]}")
                break
            time.sleep(0.2)
        else:
            return node
    raise AssertionError("unreachable")


@dataclass
class Cluster:
    address: str
    head: Node
    second: Node
    driver_env: dict[str, str]


@pytest.fixture(scope="module")
def s3():  # noqa: ANN201
    """moto's S3 server with the WARC files in BUCKET/in/; yields (endpoint, s3fs filesystem with credentials)."""
    with moto_s3_server() as endpoint:
        import s3fs

        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint, skip_instance_cache=True)
        fs.mkdir(BUCKET)
        for w in WARCS:
            fs.put(str(w), f"{BUCKET}/in/{w.name}")
        yield endpoint, fs


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    endpoint, _ = s3
    base = tmp_path_factory.mktemp("ray-nodes")
    storage = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    # RAY_AUTH_MODE too: Ray 2.60's ray.init() of a local cluster turns token auth on by setting it in os.environ,
    # so after any earlier in-process Ray run of the suite the nodes would demand a token their HOMEs do not hold
    hidden = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "RAY_ADDRESS",
              "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    # the head notices a dead node within ~3 s (default: ~30 s)
    env.update(storage, RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
               RAY_health_check_failure_threshold="3")
    port = free_port()
    short = Path(tempfile.mkdtemp(prefix="assay-ray-", dir="/tmp"))
    nodes: list[Node] = []
    try:
        # the head's job server listens on --dashboard-port (8265 unless told): a free one, beside other clusters
        # each node offers a custom resource of its own that --ray-reduce-resources can pin the reduces to
        nodes.append(_start_node("head", ["--head", "--port", str(port), "--include-dashboard=false",
                                          "--dashboard-port", str(free_port()), "--resources", '{"assay_head": 1}'],
                                 env, base, short / "h"))
        nodes.append(_start_node("second", ["--address", f"127.0.0.1:{port}", "--resources", '{"assay_big": 1}'],
                                 env, base, short / "s"))
        driver_env = {**env, **CREDENTIALS, "HOME": str(base / "driver")}
        yield Cluster(f"127.0.0.1:{port}", nodes[0], nodes[1], driver_env)
    finally:
        for node in reversed(nodes):
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        for node in reversed(nodes):
            try:
                node.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            node.kill()
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("recipes")
    (d / "plain.yaml").write_text(RECIPE)
    (d / "slow.yaml").write_text(SLOW)
    assert "test_slow" in SLOW
    return {"plain": d / "plain.yaml", "slow": d / "slow.yaml"}


@pytest.fixture(scope="module")
def local_ids(s3, cluster: Cluster, recipes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The output ids of the local executor on the same S3 input: what every cluster run must give."""
    work = tmp_path_factory.mktemp("local")
    assay_cli("run", str(recipes["plain"]), "-i", f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/local", "-w", "1",
              "--no-report", env=cluster.driver_env, cwd=work)
    ids = _ids(s3[1], "local")
    assert len(ids) > 10
    return ids


def _ids(fs, prefix: str) -> list[str]:  # noqa: ANN001
    """The ids of a run's output records (every line of its data/train-*.jsonl.gz files on S3)."""
    fs.invalidate_cache()
    ids = []
    for path in sorted(fs.glob(f"{BUCKET}/{prefix}/data/train-*.jsonl.gz")):
        ids.extend(orjson.loads(line)["id"] for line in gzip.decompress(fs.cat_file(path)).splitlines() if line)
    return sorted(ids)


def _markers(fs, prefix: str) -> dict[str, dict]:  # noqa: ANN001
    fs.invalidate_cache()
    return {p.rsplit("/", 1)[-1]: orjson.loads(fs.cat_file(p)) for p in fs.glob(f"{BUCKET}/{prefix}/.assay/markers/*")}


def _run_args(recipe: Path, prefix: str) -> list[str]:
    return ["run", str(recipe), "-i", f"s3://{BUCKET}/in/", "-o", f"s3://{BUCKET}/{prefix}", "-e", "ray",
            "--no-report", *RAY_ENV]


def test_two_node_cluster_gives_the_local_output_and_shares_dedup_state_through_s3(
        s3, cluster: Cluster, recipes: dict[str, Path], local_ids: list[str], tmp_path: Path):
    fs = s3[1]
    # RAY_ADDRESS names the cluster, as on a cluster's head node (was: "num_cpus must not be provided" from ray.init)
    env = {**cluster.driver_env, "RAY_ADDRESS": cluster.address}
    p = assay_cli(*_run_args(recipes["plain"], "ray"), env=env, cwd=tmp_path)
    assert "Traceback" not in p.stderr
    assert _ids(fs, "ray") == local_ids
    stats = orjson.loads(fs.cat_file(f"{BUCKET}/ray/stats.json"))
    assert stats["executor"] == "ray" and stats["output"]["records"] == len(local_ids)

    markers = _markers(fs, "ray")
    jobs = {name: m["ray_node"] for name, m in markers.items() if name.startswith("s")}
    assert len(jobs) == 2 * len(WARCS) and all(jobs.values())
    assert len(set(jobs.values())) == 2, f"the jobs did not run on both nodes: {jobs}"
    # collect on both nodes, one reduce on one of them, apply on both: the state exchanged through S3
    fs.invalidate_cache()
    state = fs.find(f"{BUCKET}/ray/.assay/state")
    assert any(p.endswith("-minhash_dedup/shard-00000.json") for p in state)
    assert any(p.endswith("-minhash_dedup/shard-00001.json") for p in state)
    assert any(p.endswith("-minhash_dedup/decisions-00001.npz") for p in state)
    for node in (cluster.head, cluster.second):  # nothing of the run on a node's own disk
        assert not (node.home / "cache" / "assay").exists()
        assert [p.name for p in (node.home / "tmp").iterdir() if p.name.startswith("assay-state-")] == []


def _node_with(cluster: Cluster, resource: str) -> str:
    """The id of the one node of the cluster that offers ``resource``, as Ray's own state API says."""
    code = ("import json, ray; ray.init(address=%r, log_to_driver=False, configure_logging=False); "
            "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive'] and %r in n['Resources']]))"
            % (cluster.address, resource))
    p = subprocess.run([sys.executable, "-c", code], env=cluster.driver_env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    (node,) = json.loads(p.stdout.strip().splitlines()[-1])
    return node


def test_the_reduce_is_pinned_to_the_node_with_the_resource_asked_for(
        s3, cluster: Cluster, recipes: dict[str, Path], local_ids: list[str], tmp_path: Path):
    """--ray-reduce-resources NAME=1: MinHash's reduce (the step that holds every shard's state at once) runs on the
    only node that offers NAME, once pinned to each of the two nodes; the jobs still spread over both; the output is
    unchanged. A resource no node offers is refused in one line (the reduce would otherwise wait for it forever)."""
    fs = s3[1]
    for resource in ("assay_big", "assay_head"):
        node = _node_with(cluster, resource)
        prefix = f"pinned-{resource}"
        args = _run_args(recipes["plain"], prefix) + ["--ray-address", cluster.address,
                                                      "--ray-reduce-resources", f"{resource}=1"]
        p = assay_cli(*args, env=cluster.driver_env, cwd=tmp_path)
        assert "Traceback" not in p.stderr
        assert _ids(fs, prefix) == local_ids
        markers = _markers(fs, prefix)
        reduces = {name: m["ray_node"] for name, m in markers.items() if name.startswith("reduce")}
        assert reduces and set(reduces.values()) == {node}, (resource, reduces, node)
        assert len({m["ray_node"] for name, m in markers.items() if name.startswith("s")}) == 2

    args = _run_args(recipes["plain"], "unpinnable") + ["--ray-address", cluster.address,
                                                        "--ray-reduce-resources", "assay_huge=1"]
    p = assay_cli(*args, env=cluster.driver_env, cwd=tmp_path, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert "--ray-reduce-resources assay_huge=1: the cluster has 0" in line and "assay_big=1" in line, line


def _run_and_kill(cluster: Cluster, args: list[str], cwd: Path, kill) -> tuple[int, str]:  # noqa: ANN001
    """Start `assay run ARGS`, call ``kill()`` until it returns True (it kills something of the cluster), wait."""
    log = cwd / "run.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([ASSAY, *args], env=cluster.driver_env, cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=err)
        try:
            deadline = time.time() + 120
            while not kill():
                assert proc.poll() is None, "the run ended before anything was killed:\n" + log.read_text()
                assert time.time() < deadline
                time.sleep(0.05)
            code = proc.wait(240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    return code, log.read_text()


def test_a_killed_worker_process_is_retried_and_nothing_is_lost_or_duplicated(
        s3, cluster: Cluster, recipes: dict[str, Path], local_ids: list[str], tmp_path: Path):
    fs = s3[1]
    args = _run_args(recipes["slow"], "worker-killed") + ["--ray-address", cluster.address]
    killed: list[int] = []

    def kill() -> bool:
        for node in (cluster.second, cluster.head):
            for pid in node.job_workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return True
        return False

    code, log = _run_and_kill(cluster, args, tmp_path, kill)
    assert code == 0 and "Traceback" not in log, log
    ids = _ids(fs, "worker-killed")
    assert ids == local_ids and not [i for i, n in Counter(ids).items() if n > 1]
    assert killed and not any(Path(f"/proc/{pid}").exists() for pid in killed)


def test_no_credentials_on_the_nodes_is_one_line(s3, cluster: Cluster, recipes: dict[str, Path], tmp_path: Path):
    # without --ray-env the tasks have only their node's environment: endpoint, no keys
    args = [a for a in _run_args(recipes["plain"], "nokeys") if a not in RAY_ENV] + ["--ray-address", cluster.address]
    p = assay_cli(*args, env=cluster.driver_env, cwd=tmp_path, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert re.search(r"failed on the Ray node at \S+: NoCredentialsError: Unable to locate credentials", line), line
    assert "--ray-env" in line and line.startswith("error: job s0-0000"), line


def test_the_second_node_killed_mid_run_still_gives_the_local_output(
        s3, cluster: Cluster, recipes: dict[str, Path], local_ids: list[str], tmp_path: Path):
    """Last in the module: the second node does not come back."""
    fs = s3[1]
    args = _run_args(recipes["slow"], "node-killed") + ["--ray-address", cluster.address]

    def kill() -> bool:
        if not cluster.second.job_workers():
            return False
        cluster.second.kill()
        return True

    code, log = _run_and_kill(cluster, args, tmp_path, kill)
    if code != 0:  # Ray gave up on a job: the rerun resumes from the markers
        assert code == 2 and "Traceback" not in log, log
        assay_cli(*args, env=cluster.driver_env, cwd=tmp_path)
    ids = _ids(fs, "node-killed")
    assert ids == local_ids and not [i for i, n in Counter(ids).items() if n > 1]
    print(f"second node killed: the run {'completed' if code == 0 else 'failed and the rerun completed'}")
