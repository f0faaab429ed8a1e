"""A redis-server of the harness's own, on a free loopback port, that can be killed and restarted.

Crash faults need a server the harness may kill -9: never the user's.  The server keeps its
files in a private temporary directory; with ``appendonly`` it writes an AOF synced on every
write (``appendfsync always``), so a restart after kill -9 shows exactly what a durable cache
keeps.  Nothing else is configured: no RDB snapshots, loopback only.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time

import redis

START_TIMEOUT = 10.0


class PrivateRedisError(RuntimeError):
    """The private server could not be started (the message says why and how to fix it)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """``redis-server`` on 127.0.0.1:<free port>, started by :meth:`start`."""

    def __init__(self, *, appendonly: bool = False, password: str | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise PrivateRedisError("redis-server is not installed (apt-get install redis-server)")
        self.appendonly = appendonly
        self.password = password
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="cachecheck-redis-")
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--dir", self._dir.name, "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always", "--daemonize", "no", "--logfile", "",
        ]
        if self.password:
            command += ["--requirepass", self.password]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise PrivateRedisError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
            finally:
                client.close()

    def kill(self) -> None:
        """kill -9: the server dies without a chance to write anything."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def restart(self) -> None:
        """Start again on the same port and directory (an AOF, if any, is replayed)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._dir.cleanup()

    def __enter__(self) -> "PrivateRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
