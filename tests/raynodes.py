"""Ray clusters of `ray start` nodes on 127.0.0.1 for the tests, and stopping exactly what a test
started: one node or two, each `ray start --block` in its own process group with its own ports
and temp dir (so that an embedded `ray.init()` elsewhere on the machine never finds them)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RAY = Path(sys.executable).parent / "ray"  # the CLI of this interpreter's Ray (CI: a fresh venv)
PORTS_PER_NODE = 60


@dataclass
class Loopback:
    """A running cluster of one or two nodes on 127.0.0.1 and how to reach it."""

    gcs: str  # HOST:PORT for ray.init / --address
    dashboard: str  # http://127.0.0.1:PORT, the dashboard and job API
    env: dict[str, str]  # for its clients: token auth on, our own token
    node_ids: dict[str, str]  # node name -> Ray node id
    temp_dir: Path
    procs: dict[str, subprocess.Popen]  # node name -> its `ray start --block` process


def free_base(count: int) -> int:
    """A base port with `count` consecutive free ports on 127.0.0.1 (other agents run Ray)."""
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def node_args(base: int) -> list[str]:
    """Every port a node opens, from `base` on, so nothing collides with another Ray here."""
    names = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
    args = [f"{n}={base + i}" for i, n in enumerate(names)]
    return [*args, f"--min-worker-port={base + 20}", f"--max-worker-port={base + 59}"]


def ray_list(what: str, dashboard: str, env: dict[str, str], *filters: str) -> list[dict]:
    """`ray list WHAT` (State API, through the dashboard) as dicts; [] while it cannot answer."""
    proc = subprocess.run([str(RAY), "list", what, "--address", dashboard, "--format", "json",
                           "--detail", "--limit", "10000", *filters], env=env,
                          capture_output=True, text=True, timeout=120)
    # "No resource in the cluster" is a sentence, not an empty JSON list.
    ok = proc.returncode == 0 and proc.stdout.lstrip().startswith("[")
    return json.loads(proc.stdout) if ok else []


def wait_for_nodes(dashboard: str, env: dict[str, str], n: int, procs) -> list[dict]:
    for _ in range(120):
        alive = [x for x in ray_list("nodes", dashboard, env) if x.get("state") == "ALIVE"]
        if len(alive) >= n:
            return alive
        for p in procs:
            assert p.poll() is None, f"ray start exited {p.returncode}"
        time.sleep(1)
    raise AssertionError(f"the loopback cluster did not reach {n} nodes")


def process_tree(pid: int) -> list:
    """The live process `pid` and its descendants (psutil processes): a node's `ray start`,
    its raylet and the workers the raylet started. Only this tree is searched, never every
    process on the machine."""
    import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)

    psutil = pytest.importorskip("psutil")
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(procs: list) -> None:
    """SIGKILL every process of `procs` (from `process_tree`) still alive, and reap them."""
    psutil = pytest.importorskip("psutil")

    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=30)


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop exactly what this test started: SIGKILL each node's whole process tree (its `ray
    start --block`, raylet, GCS and the workers the raylet started, which run in process groups
    of their own). A throwaway test cluster needs no graceful `ray stop` (which waits ~10 s per
    node); its temp dir is removed after."""
    kill_tree([proc for p in procs for proc in process_tree(p.pid)])
    for p in procs:
        p.wait()


@contextlib.contextmanager
def loopback_cluster(tmp: Path, cpus: int = 1, gpus: int = 1, nodes: int = 2,
                     node_env: dict[str, str] | None = None):
    """Head and (with `nodes=2`) a second node, each `ray start --block` in its own process
    group with its own ports, `cpus` CPUs and `gpus` advertised GPUs; token auth on (`ray
    start` turns it on) with a token of our own; `node_env` added to the nodes' environment
    (their workers inherit it). Everything started is stopped on exit."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))  # short: Unix socket paths
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    base = free_base(3 * PORTS_PER_NODE)
    gcs, dash, client = base, base + 1, base + 2
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
              f"--num-gpus={gpus}", "--disable-usage-stats"]
    # A temp dir per node, as on separate machines: a node deletes its unpacked job packages
    # when done with them, which must not pull the job driver's cwd away on the head.
    head = [str(RAY), "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}", f"--ray-client-server-port={client}", *common,
            f"--temp-dir={temp_dir / 'head'}", *node_args(base + PORTS_PER_NODE)]
    worker = [str(RAY), "start", f"--address=127.0.0.1:{gcs}", *common,
              f"--temp-dir={temp_dir / 'node2'}", *node_args(base + 2 * PORTS_PER_NODE)]
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, cmd in (("head", head), ("node2", worker))[:nodes]:
            log = (tmp / f"{name}.log").open("w")
            # Train's placement-group cleaner asks the State API of this node's own dashboard,
            # not whichever Ray it would find on the machine first.
            api = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dash}"}
            procs[name] = subprocess.Popen(cmd, env=env | api | (node_env or {}), stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           cwd=ROOT)
            alive = wait_for_nodes(f"http://127.0.0.1:{dash}", env, len(procs),
                                   procs.values())
        head_id = next(x["node_id"] for x in alive if x.get("is_head_node"))
        ids = {"head": head_id}
        ids.update(("node2", x["node_id"]) for x in alive if x["node_id"] != head_id)
        yield Loopback(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", env, ids, temp_dir,
                       procs)
    finally:
        stop(list(procs.values()))
        shutil.rmtree(temp_dir, ignore_errors=True)


