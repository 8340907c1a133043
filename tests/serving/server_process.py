"""Start `modelkit serve` as a subprocess on ephemeral loopback ports and talk HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

REQUEST_TIMEOUT_S = 30


class ServerProcess:
    """A running server: `.inference` and `.management` base URLs, `.token`."""

    def __init__(self, store: str, *args: str, token_file: str | None = None, start_timeout=60):
        command = [sys.executable, "-c", "from modelkit.cli.main import cli; cli()", "serve", "--model-store", store,
                   "--port", "0", "--management-port", "0", *args]
        if token_file:
            command += ["--token-file", token_file]
        self.log = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall the server
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log)
        self.ready = self._ready_line(start_timeout)
        self.inference = self.ready["inference"]
        self.management = self.ready["management"]
        tf = self.ready["token_file"]
        self.token = open(tf).read() if tf else None

    def _ready_line(self, timeout):
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                line = self.proc.stdout.readline()
                if line:
                    return json.loads(line)
            if self.proc.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"server did not start: {self.stderr_text()[-3000:]}")

    def stderr_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def request(self, method, url, body=None, headers=None, timeout=REQUEST_TIMEOUT_S):
        """(status, headers dict, body bytes); a dict/list body is sent as JSON."""
        parts = urllib.parse.urlsplit(url)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body,
                         headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def infer(self, method, path, body=None, headers=None, timeout=REQUEST_TIMEOUT_S):
        return self.request(method, self.inference + path, body, headers, timeout)

    def manage(self, method, path, body=None, token=True, timeout=REQUEST_TIMEOUT_S):
        headers = {"Authorization": f"Bearer {self.token}"} if token and self.token else {}
        return self.request(method, self.management + path, body, headers, timeout)

    def describe(self, name):
        status, _, body = self.manage("GET", f"/models/{name}")
        assert status == 200, body
        return json.loads(body)[0]

    def terminate(self, timeout=30):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
