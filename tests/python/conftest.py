"""Fixtures for the Python interop tests: stubs generated from our .proto at
test time, and a real `usersvc serve` process on a free port."""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
import pytest
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("USERSVC_BIN", os.path.join(ROOT, "target", "debug", "usersvc"))
SECRET = "python-interop-secret-python-interop-secret"


def generate_stubs():
    """The modules protoc's Python plugins write, imported from a temporary
    directory that is removed at once: imported modules need no files, and
    a process that is killed (the Rust interop test stops server.py so)
    would leave the directory behind."""
    with tempfile.TemporaryDirectory(prefix="usersvc-stubs-") as out:
        proto_dir = os.path.join(ROOT, "proto")
        code = protoc.main([
            "protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
            os.path.join(proto_dir, "user_service.proto"),
        ])
        assert code == 0, "protoc rejected proto/user_service.proto"
        sys.path.insert(0, out)
        try:
            import user_service_pb2
            import user_service_pb2_grpc
        finally:
            sys.path.remove(out)

    return user_service_pb2, user_service_pb2_grpc


PB, RPC = generate_stubs()


class Server:
    """A running usersvc; its JSON log lines are kept in a file."""

    def __init__(self, tmp, extra_args=(), env=None):
        self.log_path = os.path.join(tmp, "server.log")
        self.log = open(self.log_path, "w")
        env = env if env is not None else dict(os.environ, USERSVC_JWT_SECRET=SECRET)
        env = dict(env, RUST_LOG="info")
        self.process = subprocess.Popen(
            [BIN, "serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir", tmp, "--store", f"sqlite://{tmp}/users.db", "--log-json", "--shutdown-grace", "2s", *extra_args],
            stderr=self.log, env=env,
        )
        self.addr = self._wait_for("addr")
        self.metrics_addr = self._wait_for("metrics_addr")

    def _wait_for(self, field):
        deadline = time.time() + 30
        while time.time() < deadline:
            for record in self.records():
                value = record.get("fields", {}).get(field)
                if value:
                    return value
            if self.process.poll() is not None:
                raise RuntimeError(f"usersvc exited: {open(self.log_path).read()}")
            time.sleep(0.05)
        raise RuntimeError(f"usersvc did not announce its {field}")

    def records(self):
        """The log's JSON records: whole lines only, since the server may be
        halfway through writing the last one."""
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.startswith("{") and line.endswith("\n")]

    def metric(self, series):
        """The value of one Prometheus series now, 0 before it exists."""
        with urllib.request.urlopen(f"http://{self.metrics_addr}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(series + " "):
                    return float(line.split()[-1])
        return 0.0

    def wait_for_metric(self, series, at_least):
        """Waits until `series` reaches `at_least`: what the server has done,
        not how long it had; fails after 10 s, which no healthy server needs."""
        deadline = time.time() + 10
        while self.metric(series) < at_least:
            assert time.time() < deadline, f"{series} never reached {at_least}"
            time.sleep(0.01)

    def token(self, role="admin"):
        out = subprocess.run(
            [BIN, "token", "--sub", "python", "--role", role, "--ttl", "10m"],
            env=dict(os.environ, USERSVC_JWT_SECRET=SECRET), check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def server(tmp_path):
    s = Server(str(tmp_path))
    yield s
    s.stop()


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.addr) as ch:
        yield ch


@pytest.fixture
def stub(channel):
    return RPC.UserServiceStub(channel)


@pytest.fixture
def admin(server):
    return [("authorization", f"Bearer {server.token('admin')}")]
