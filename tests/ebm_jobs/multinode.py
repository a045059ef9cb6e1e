"""A Ray cluster of several nodes on one machine, as the cluster tests need it.

Every node is a ``ray start --block`` process in a process group of its own, so a node is removed the
way a machine is lost: its whole group (raylet, workers) is killed. Each node gets its own scratch
directory as ``TMPDIR``, which its workers inherit (``tempfile.gettempdir()``): a file a worker
leaves only there is a file the rest of the cluster never sees. Token auth stays on (a token made
for the test, passed in ``RAY_AUTH_TOKEN``); nothing binds beyond 127.0.0.1 on purpose.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ALIVE = "ALIVE_NODES "  # marks the line that carries the answer of ``_wait_for``'s polling driver


def alive_nodes(stdout: str) -> list[dict]:
    """The node list from the polling driver's output, wherever Ray's own messages put it."""
    lines = [line for line in stdout.splitlines() if line.startswith(ALIVE)]
    return json.loads(lines[-1][len(ALIVE):]) if lines else []


@dataclass
class Node:
    proc: subprocess.Popen
    scratch: Path  # this node's TMPDIR
    node_id: str = ""


class LocalCluster:
    """``head`` (no CPUs: it runs drivers and Ray Train's controller) plus worker nodes added with ``add_node``."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ebmc", dir="/tmp"))  # short: Ray's socket paths have a length limit
        self.port = free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": f"127.0.0.1:{self.port}"}
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)
        self.nodes: list[Node] = []
        self.head = self._start(["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
                                 f"--temp-dir={self.base / 'ray'}", "--disable-usage-stats"], "head")
        self.head.node_id = self._wait_for(1)[0]["NodeID"]

    def _start(self, args: list[str], name: str, wrap: list[str] = ()) -> Node:
        scratch = self.base / name
        scratch.mkdir()
        env = {**self.env, "TMPDIR": str(scratch)}
        env.pop("RAY_ADDRESS", None)
        log = open(self.base / f"{name}.log", "w")
        proc = subprocess.Popen([*wrap, RAY, "start", "--node-ip-address=127.0.0.1", "--block", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return Node(proc, scratch)

    def _wait_for(self, count: int, timeout: float = 90) -> list[dict]:
        """The alive nodes, once there are ``count`` of them (one driver process polls: importing Ray costs seconds).

        The answer travels on its own marked line: Ray may print warnings to stdout after it (seen in CI on a busy
        machine: "raylet has lagging heartbeats ..." as the last line)."""
        code = ("import json, os, sys, time, ray; ray.init(address=os.environ['RAY_ADDRESS']); "
                "t = time.time() + float(sys.argv[2])\n"
                "while True:\n"
                "    alive = [n for n in ray.nodes() if n['Alive']]\n"
                "    if len(alive) == int(sys.argv[1]) or time.time() > t: break\n"
                "    time.sleep(0.5)\n"
                f"print({ALIVE!r} + json.dumps(alive), flush=True)")
        out = subprocess.run([sys.executable, "-c", code, str(count), str(timeout)], env=self.env, capture_output=True,
                             text=True, timeout=timeout + 60)
        alive = alive_nodes(out.stdout) if out.returncode == 0 else []
        if len(alive) != count:
            raise TimeoutError(f"the test cluster did not reach {count} alive nodes ({out.stderr[-500:]}); logs in {self.base}")
        return alive

    def add_node(self, cpus: int = 1, wrap: list[str] = ()) -> Node:
        """A worker node; ``wrap`` runs ``ray start`` under another command (e.g. a private mount namespace)."""
        node = self._start([f"--address=127.0.0.1:{self.port}", f"--num-cpus={cpus}"], f"n{len(self.nodes) + 1}", wrap)
        alive = self._wait_for(len(self.nodes) + 2)
        before = {n.node_id for n in self.nodes} | {self.head.node_id}
        node.node_id = next(n["NodeID"] for n in alive if n["NodeID"] not in before)
        self.nodes.append(node)
        return node

    def kill(self, node: Node) -> None:
        """Lose a node: SIGKILL to its whole process group."""
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(timeout=30)
        self.nodes.remove(node)
        self._wait_for(len(self.nodes) + 1)

    def shutdown(self) -> None:
        for node in [*self.nodes, self.head]:
            try:
                os.killpg(node.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)


def start_mlflow(base: Path) -> tuple[subprocess.Popen, str]:
    """A real tracking server on a free loopback port (one worker, no job runner: ~6 s, ~0.4 GB)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{base / 'mlflow.db'}", "--artifacts-destination", str(base / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], env=env,
                            stdout=open(base / "mlflow.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, uri
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server did not start; see {base / 'mlflow.log'}")
