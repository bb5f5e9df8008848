"""A real scitqd and scitq-agent on loopback for the tests, started from the workspace's
debug binaries (or `SCITQ_BIN_DIR`), with temp dirs, stopped by PID.

`Proxy` is a loopback TCP proxy with a stable port: scitqd restarts on a new port and the
proxy is pointed at it, so clients and agents keep one address; `cut()` breaks every
connection going through it (a network break).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


def bin_dir() -> Path:
    return Path(os.environ.get("SCITQ_BIN_DIR") or REPO / "target" / "debug")


def binary(name: str) -> str:
    path = bin_dir() / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run `cargo build --workspace --bins` first")
    return str(path)


def wait_for(what: str, check: Callable[[], object], timeout: float = START_TIMEOUT):
    """Polls `check` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported below if it never succeeds
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCITQ_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), NO_COLOR="1",
               RUST_LOG=os.environ.get("SCITQ_TEST_LOG", "info"))
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        env.pop(proxy, None)
    return env


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Proxy:
    """Forwards loopback connections to `upstream` (changeable with `retarget`)."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def retarget(self, upstream: str) -> None:
        self.upstream = upstream

    def cut(self) -> None:
        """Breaks every open connection (new ones are accepted again)."""
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.upstream.rsplit(":", 1)
            try:
                server = socket.create_connection((host, int(port)), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Cluster:
    """scitqd (+ an agent) in `root`; `addr` reaches scitqd across restarts (via a proxy)."""

    def __init__(self, root: Path, concurrency: int = 4, scitqd_args: tuple[str, ...] = ()):
        self.root = root
        self.home = root / "home"
        self.data = root / "data"
        self.home.mkdir(parents=True)
        self.data.mkdir()
        self.env = clean_env(self.home)
        self.scitqd_args = list(scitqd_args)
        self.scitqd: Optional[Proc] = None
        self.agent: Optional[Proc] = None
        self.scitqd_addr = self._start_scitqd()
        self.proxy = Proxy(self.scitqd_addr)
        self.token = (self.data / "admin.token").read_text().strip()
        self.concurrency = concurrency

    @property
    def addr(self) -> str:
        return self.proxy.addr

    def _start_scitqd(self) -> str:
        addr_file = self.data / "scitqd.addr"
        addr_file.unlink(missing_ok=True)
        self.scitqd = Proc("scitqd", [binary("scitqd"), "--listen", "127.0.0.1:0",
                                      "--data-dir", str(self.data), *self.scitqd_args],
                           self.env, self.root / "scitqd.log")

        def ready():
            if not self.scitqd.alive():
                raise RuntimeError(f"scitqd exited at start:\n{self.scitqd.tail()}")
            text = addr_file.read_text()
            return text.strip() if text.endswith("\n") else None

        return wait_for("scitqd to write scitqd.addr", ready)

    def start_agent(self, name: str = "py-agent", env: Optional[dict[str, str]] = None) -> None:
        work = self.root / f"work-{name}"
        work.mkdir(exist_ok=True)
        self.agent = Proc("scitq-agent", [
            binary("scitq-agent"), "--server", self.addr, "--name", name,
            "--concurrency", str(self.concurrency), "--work-dir", str(work),
            "--reconnect-max", "1s",
        ], {**self.env, **(env or {})}, self.root / f"agent-{name}.log")

    def kill_scitqd(self) -> None:
        assert self.scitqd is not None
        self.scitqd.kill(signal.SIGKILL)

    def restart_scitqd(self) -> None:
        self.scitqd_addr = self._start_scitqd()
        self.proxy.retarget(self.scitqd_addr)

    def stop(self) -> None:
        for proc in (self.agent, self.scitqd):
            if proc is not None:
                proc.stop()
        self.proxy.close()

    def logs(self) -> str:
        parts = []
        for proc in (self.scitqd, self.agent):
            if proc is not None:
                parts.append(f"--- {proc.name} ({proc.log}) ---\n{proc.tail()}")
        return "\n".join(parts)
