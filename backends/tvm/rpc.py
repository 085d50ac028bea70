"""Measure tuning candidates on remote devices through TVM's own RPC tracker.

yolograph does not distribute anything itself: `--rpc host:port:key` hands MetaSchedule an
`RPCRunner` that asks TVM's tracker for any free server registered under `key`, uploads each
built candidate there and times it. Start the pieces with TVM's own tools:

    python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190             # one, anywhere
    python -m tvm.exec.rpc_server --tracker HOST:9190 --key my-board      # on each device

and compile with the device's target, e.g. --target 'llvm -mtriple=aarch64-linux-gnu
-mcpu=cortex-a76 -num-cores=4' --rpc HOST:9190:my-board. `LocalRpcCluster` starts a tracker
and servers on localhost (tests and trying it out).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from yolograph.errors import BackendError

SESSION_TIMEOUT_S = 120


@dataclass(frozen=True)
class RpcAddress:
    host: str
    port: int
    key: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:{self.key}"


def parse_rpc(text: str) -> RpcAddress:
    """'tracker_host:port:key' -> RpcAddress."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
        raise BackendError(f"--rpc {text!r} is not tracker_host:port:device_key (e.g. 127.0.0.1:9190:x86).")
    return RpcAddress(parts[0], int(parts[1]), parts[2])


def rpc_config(address: RpcAddress):
    from tvm.s_tir.meta_schedule.runner import RPCConfig

    return RPCConfig(tracker_host=address.host, tracker_port=address.port, tracker_key=address.key,
                     session_timeout_sec=SESSION_TIMEOUT_S)


def free_servers(address: RpcAddress) -> int:
    """How many servers with `address.key` the tracker knows; BackendError if it is unreachable."""
    if not _port_open(address.port, address.host, timeout=3.0):  # TVM itself retries for 60 s
        raise BackendError(f"Cannot reach the TVM RPC tracker at {address.host}:{address.port} (nothing listens "
                           "there); start it with python -m tvm.exec.rpc_tracker.")
    config = rpc_config(address)
    try:
        return int(config.count_num_servers(allow_missing=True))
    except Exception as exc:  # noqa: BLE001 - socket / tracker protocol errors
        raise BackendError(f"Cannot reach the TVM RPC tracker at {address.host}:{address.port} ({exc}); "
                           "start it with python -m tvm.exec.rpc_tracker.") from exc


def make_rpc_runner(text: str, evaluator_config):
    """An RPCRunner with one connection per registered server."""
    from tvm.s_tir import meta_schedule as ms

    address = parse_rpc(text)
    servers = free_servers(address)
    if servers == 0:
        raise BackendError(f"The RPC tracker at {address.host}:{address.port} has no server with key "
                           f"{address.key!r}; start one with python -m tvm.exec.rpc_server "
                           f"--tracker {address.host}:{address.port} --key {address.key}.")
    return ms.runner.RPCRunner(rpc_config(address), evaluator_config, max_workers=servers)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRpcCluster:
    """A TVM RPC tracker plus `servers` RPC servers on localhost, as subprocesses (a context manager)."""

    def __init__(self, key: str = "local", servers: int = 1, startup_timeout_s: float = 120.0) -> None:
        self.key = key
        self.servers = servers
        self.startup_timeout_s = startup_timeout_s
        self.port = _free_port()
        self.processes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}:{self.key}"

    def __enter__(self) -> LocalRpcCluster:
        python = sys.executable
        self.processes.append(subprocess.Popen(
            [python, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(self.port),
             "--port-end", str(self.port + 1), "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            self._wait(lambda: _port_open(self.port), "the RPC tracker to listen")
            for _ in range(self.servers):
                port = _free_port()
                self.processes.append(subprocess.Popen(
                    [python, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                     "--port-end", str(port + 1),
                     "--tracker", f"127.0.0.1:{self.port}", "--key", self.key, "--silent"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self._wait(lambda: free_servers(parse_rpc(self.address)) >= self.servers, "the RPC servers to register")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise BackendError(f"A TVM RPC process exited while waiting for {what}.")
            try:
                if ready():
                    return
            except BackendError:
                pass
            time.sleep(0.5)
        raise BackendError(f"Timed out after {self.startup_timeout_s:.0f} s waiting for {what}.")

    def __exit__(self, *exc) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def _port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
