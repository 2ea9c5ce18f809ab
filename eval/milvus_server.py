"""A real Milvus server for the tests and the benchmark, run where it cannot be reached from outside.

The store's server path (consistency levels, index types, a server that dies, freezes or restarts)
cannot be tested against embedded Milvus Lite. PyPI's `milvus==2.3.5` (the newest Linux x86_64
wheel of the "embedded Milvus" launcher; it has no Python dependencies) runs a standalone server
from a data folder. It listens on all interfaces whatever its configuration says, so it only runs
inside a loopback-only network namespace: `make test` runs pytest through `loopback` below, and the
fixture refuses to start a server anywhere else.

    python -m eval.milvus_server install             # the server's own venv, once (needs pip's network)
    python -m eval.milvus_server loopback -- CMD...  # CMD in a new loopback-only network namespace
    python -m eval.milvus_server serve DATA_DIR      # a server in the foreground (inside loopback only)
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

VERSION = "2.3.5"
# Outside the repository: one install serves every checkout and survives `make clean`.
VENV = Path(
    os.environ.get("RAG_MILVUS_SERVER_VENV", Path.home() / ".cache" / "arabic-rag" / f"milvus-server-{VERSION}")
)
PORT = 19530
# With authorization on, a wrong token is refused (off, the server accepts any); this is the
# server's default superuser.
TOKEN = "root:Milvus"
HEALTH_PORT = 9091  # the launcher's default; free in a fresh namespace
# Measured here: healthy 8–21 s after start on a fresh data folder, 9 s after a restart on the old
# one once the launcher keeps its ports (2 cores under load 6–12).
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
_MARKER = ".installed"
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


# The launcher probes each port with a plain bind() and silently moves to the next free one when it
# fails; after a kill the old connections keep the port in TIME_WAIT/FIN_WAIT for minutes, so a
# restarted server listened on 19532 while clients kept calling 19530. The server itself binds with
# SO_REUSEADDR (Go's default), so the probe does too; a port really in use still fails.
_LAUNCH = """
import socket, sys, milvus
def probe(self, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None
milvus.MilvusServerConfig.try_bind_port = probe
sys.argv[0] = "milvus-server"
sys.exit(milvus.main())
"""


def installed() -> bool:
    return (VENV / _MARKER).is_file()


def install() -> Path:
    """The server's venv at VENV (see `_install`)."""
    return _install(VENV, [f"milvus=={VERSION}"], VERSION)


def _install(venv: Path, packages: list[str], version: str) -> Path:
    """A venv holding `packages`, built beside `venv` and renamed into place so a failed install
    leaves nothing half-made; a venv already there is kept."""
    if (venv / _MARKER).is_file():
        return venv
    if venv.exists():
        raise SystemExit(f"{venv} exists but is not a finished install by this tool: remove it and retry")
    venv.parent.mkdir(parents=True, exist_ok=True)
    building = venv.with_name(f"{venv.name}.building-{os.getpid()}")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
        subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages], check=True)
        (building / _MARKER).write_text(version + "\n", encoding="utf-8")
        building.rename(venv)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return venv


# Milvus Lite 2.5: Milvus 2.5's C++ engine (BM25 functions, knowhere HNSW) in one binary, which
# serves a data file over TCP. Milvus Lite 3 (requirements.txt) is a pure-Python engine whose
# searches cost a Python loop over every row (eval/BENCHMARKS.md); the benchmark measures the
# million-chunk collection on this one. Its own venv: it needs pymilvus 2.5 and pkg_resources.
LITE25_VERSION = "2.5.1"
LITE25_VENV = Path(
    os.environ.get("RAG_MILVUS_LITE25_VENV", Path.home() / ".cache" / "arabic-rag" / f"milvus-lite-{LITE25_VERSION}")
)
_LITE25_SERVE = """
import signal, sys, threading
from milvus_lite.server import Server
server = Server(sys.argv[1], address=sys.argv[2])
if not server.start():
    sys.exit("milvus-lite did not start")
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
server.stop()
"""


def install_lite25() -> Path:
    """Milvus Lite 2.5's venv at LITE25_VENV (needs pip's network once)."""
    return _install(LITE25_VENV, [f"milvus-lite=={LITE25_VERSION}", "setuptools<70"], LITE25_VERSION)


def interfaces() -> list[str]:
    """Network interfaces of this process's namespace (/proc/net/dev is per namespace; /sys is not)."""
    lines = Path("/proc/net/dev").read_text(encoding="ascii").splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines)


def loopback_only() -> bool:
    return interfaces() == ["lo"]


def enter_loopback_namespace() -> str:
    """Move this process into a new network namespace with only `lo`, up; '' on success, else why not."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())} (needs root or user namespaces)"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | _IFF_UP, b""))
    return ""


def healthy(port: int = HEALTH_PORT) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return b"OK" in response.read()
    except OSError:
        return False


class Server:
    """One `milvus-server` launcher and its server process, in their own process group."""

    def __init__(self, data: Path, port: int = PORT) -> None:
        self.data, self.port, self.token = data, port, TOKEN
        self.uri = f"http://127.0.0.1:{port}"
        self.launcher: subprocess.Popen[bytes] | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        if not loopback_only():
            raise RuntimeError(
                f"refusing to start Milvus outside a loopback-only namespace (interfaces {interfaces()})"
            )
        self.data.mkdir(parents=True, exist_ok=True)
        log = open(self.data / "launcher.log", "ab")  # noqa: SIM115 - the child keeps it open
        self.launcher = subprocess.Popen(
            # The launcher reads bools with bool(str): any non-empty value turns authorization on.
            [
                str(VENV / "bin" / "python"),
                "-c",
                _LAUNCH,
                "--data",
                str(self.data),
                "--proxy-port",
                str(self.port),
                "--authorization-enabled",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        # A test process killed outright (a CI timeout's SIGKILL) runs no teardown: this shell then
        # kills the server's group. Stopped first in `kill`, so it never outlives the group it names.
        self.watchdog = subprocess.Popen(
            ["sh", "-c", f"while kill -0 {os.getpid()}; do sleep 1; done 2>/dev/null; kill -KILL -{self.launcher.pid}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready():
            if self.launcher.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.data / "launcher.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Milvus server did not become healthy in {START_TIMEOUT_S:.0f} s:\n{tail}")
            time.sleep(0.2)
        config = (self.data / "configs" / "milvus.yaml").read_text(encoding="utf-8")
        if f"port: {self.port}\n" not in config:
            self.stop()
            raise RuntimeError(
                f"the Milvus launcher did not take port {self.port} (see {self.data}/configs/milvus.yaml)"
            )
        return self

    def ready(self) -> bool:
        """Healthy and serving: what `start` waits for and a test checks after freezing the server."""
        return healthy(self.health_port()) and self.serving()

    def serving(self) -> bool:
        """Whether the server creates, loads and searches a collection. /healthz alone is not enough:
        after a freeze near its sessions' expiry it said OK while every load failed with "nodes not
        enough", and the server exited soon after (a CI run, 2026-12-05)."""
        from pymilvus import MilvusClient

        probe = "_serving_probe"
        try:
            client = MilvusClient(uri=self.uri, token=self.token, timeout=10, dedicated=True)
        except Exception:
            return False
        try:
            if client.has_collection(probe):
                client.drop_collection(probe)
            client.create_collection(probe, dimension=2)  # with an index, loaded
            client.insert(probe, [{"id": 1, "vector": [1.0, 0.0]}])
            found = client.search(probe, [[1.0, 0.0]], limit=1, consistency_level="Strong")
            client.drop_collection(probe)
            return bool(found and found[0])
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def health_port(self) -> int:
        """The launcher takes the first free port from 9091 up for /healthz (after a kill, 9091 can
        still be in TIME_WAIT) and hands it to the server as METRICS_PORT."""
        try:
            environ = Path(f"/proc/{self.server_pid()}/environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            return HEALTH_PORT
        found = [int(e.split(b"=", 1)[1]) for e in environ if e.startswith(b"METRICS_PORT=")]
        return found[0] if found else HEALTH_PORT

    def server_pid(self) -> int:
        """The server process (the launcher's child): the one to freeze or kill in failure tests."""
        assert self.launcher is not None
        return int(Path(f"/proc/{self.launcher.pid}/task/{self.launcher.pid}/children").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL to the whole group: a crash, as far as clients can tell."""
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()
            self.watchdog = None
        if self.launcher is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.launcher.pid, signal.SIGKILL)
            self.launcher.wait()
            self.launcher = None

    def stop(self) -> None:
        """SIGINT to the launcher stops the server (SIGTERM to the server does not); SIGKILL to the
        group if that takes too long or the server is frozen."""
        if self.launcher is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.launcher.pid, signal.SIGCONT)  # a frozen server cannot stop
            self.launcher.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.launcher.wait(STOP_TIMEOUT_S)
        self.kill()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def lite_server(data: Path) -> Iterator[str]:
    """Milvus Lite's own gRPC server (`milvus-lite server`, PyPI milvus-lite) in a process of its
    own, bound to loopback, its data in `data`: how several app processes share one Milvus Lite
    collection (a Lite file opened directly belongs to one process). Yields its URI; stopped after."""
    port = _free_port()
    command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data / "db"), "--host", "127.0.0.1"]
    with _serving(data, [*command, "--port", str(port)], port) as uri:
        yield uri


@contextlib.contextmanager
def lite25_server(data: Path) -> Iterator[str]:
    """Milvus Lite 2.5 (install_lite25) serving `data`/milvus.db on a loopback port; yields its URI."""
    port = _free_port()
    python = str(install_lite25() / "bin" / "python")
    data.mkdir(parents=True, exist_ok=True)
    with _serving(data, [python, "-c", _LITE25_SERVE, str(data / "milvus.db"), f"127.0.0.1:{port}"], port) as uri:
        yield uri


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _serving(data: Path, command: list[str], port: int) -> Iterator[str]:
    """`command` running until the `with` ends, its output in data/server.log, once `port` answers."""
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "server.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log_tail = (data / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{command[0]} did not start: {log_tail}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)
        if process.poll() is None:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running(data: Path) -> Iterator[Server]:
    server = Server(data).start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    if argv[:1] == ["install"]:
        print(f"Milvus server {VERSION}: {install()}")
        return 0
    if argv[:1] == ["loopback"] and "--" in argv:
        command = argv[argv.index("--") + 1 :]
        reason = enter_loopback_namespace()
        if reason:
            print(
                f"note: running without a loopback-only network namespace ({reason}); the Milvus server tests "
                "will skip",
                file=sys.stderr,
            )
        os.execvp(command[0], command)
    if argv[:1] == ["serve"] and len(argv) == 2:
        # SIGTERM too: a shell starts background jobs with SIGINT ignored.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.default_int_handler)
        with running(Path(argv[1])) as server:
            print(f"Milvus {VERSION} at {server.uri} (token {server.token}); Ctrl+C or SIGTERM stops it", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
