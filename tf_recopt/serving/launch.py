"""Runs `tf-recopt serve` in a child process on loopback ports and talks to
its REST port: for integration tests, benchmarks and users' own smoke tests
of a model directory before it goes to production."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, raw=None):
    """(status, parsed JSON or text) for a request to the REST port."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            code, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        code, text = exc.code, exc.read().decode()
    try:
        return code, json.loads(text)
    except ValueError:
        return code, text


class Server:
    """`tf-recopt serve` in a subprocess with free gRPC and REST ports; stops on exit."""

    def __init__(self, *flags, env=None):
        self.grpc_port, self.rest_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "tf_recopt.cli", "serve", f"--port={self.grpc_port}",
               f"--rest_api_port={self.rest_port}", *flags]
        self.log_path = os.path.join(tempfile.gettempdir(), f"recopt_serve_{self.rest_port}.log")
        self._log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))

    @property
    def url(self):
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def target(self):
        return f"127.0.0.1:{self.grpc_port}"

    def log(self):
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def wait_version(self, model, version, state="AVAILABLE", timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                code, body = http("GET", f"{self.url}/v1/models/{model}")
            except OSError:
                code, body = None, None
            if code == 200:
                states = {int(v["version"]): v["state"] for v in body["model_version_status"]}
                if states.get(version) == state:
                    return body
            time.sleep(0.2)
        raise AssertionError(f"{model} version {version} not {state} after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
