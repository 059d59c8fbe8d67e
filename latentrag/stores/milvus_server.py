"""A local Milvus standalone server for development, tests and benchmarks (``pip install milvus==2.3.5``).

The ``milvus`` wheel ships Milvus 2.3.5 standalone (embedded etcd, local storage): ``milvus-server
--data DIR --proxy-port PORT``. It starts children (the ``milvus`` binary), so :class:`LocalMilvusServer`
starts it in its own process group and stops it by that group.

Listening address. Milvus 2.3.5 has no listen-address setting: its ``proxy.ip``/``*.ip`` options only set
the address it *advertises*, and every gRPC service (the proxy, the coordinators, the nodes, the metrics
port 9091) listens on all interfaces (checked with ``ss -ltn``); only the embedded etcd binds 127.0.0.1.
So with ``network="private"`` (the default) the server runs in a network namespace of its own, which has
nothing but a loopback interface (``unshare --net``, as root or through an unprivileged user namespace):
no other host can reach it, and no port of this machine is taken. A small forwarder inside that namespace
carries one Unix socket (``DATA/milvus.sock``) to the proxy port, and clients connect with
``uri="unix:DATA/milvus.sock"``, which pymilvus supports. ``network="host"`` runs it in this machine's
network instead (reachable at ``http://127.0.0.1:PORT``, and on every interface).

>>> with LocalMilvusServer("/tmp/mv") as server:  # doctest: +SKIP
...     store = MilvusStore(server.uri, "docs")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from latentrag.errors import InvalidInputError, StoreError

#: What milvus-server prints once the server passed its own health check (``/healthz`` says OK).
READY = "Welcome to use Milvus!"
NETWORKS = ("private", "host")
_LOG = "server.log"


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalMilvusServer:
    """Milvus 2.3.5 standalone from the ``milvus`` wheel, in ``data_dir``, in its own process group.

    ``start()`` waits until the server answers (at most ``timeout`` seconds) and raises
    :class:`~latentrag.errors.StoreError` with the reason and the tail of the server's log when it cannot
    start; ``stop()`` (also on ``with`` exit) kills the whole process group. ``uri`` is what
    :class:`~latentrag.stores.milvus.MilvusStore` connects to.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, network: str = "private", port: int | None = None,
                 timeout: float = 180.0) -> None:
        if network not in NETWORKS:
            msg = f"network must be one of {list(NETWORKS)}, got {network!r}."
            raise InvalidInputError(msg)
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.network = network
        # In a namespace of its own every port is free: the defaults serve.
        self.port = (19530 if network == "private" else free_loopback_port()) if port is None else int(port)
        self.timeout = float(timeout)
        self.socket_path = self.data_dir / "milvus.sock"
        self.log_path = self.data_dir / _LOG
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"unix:{self.socket_path}" if self.network == "private" else f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def __enter__(self) -> LocalMilvusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalMilvusServer(uri={self.uri!r}, network={self.network!r}, pid={self.pid})"

    def command(self) -> list[str]:
        """The command line that starts the launcher (inside ``unshare`` for a private network)."""
        launcher = [sys.executable, "-m", "latentrag.stores.milvus_server", str(self.data_dir), str(self.port),
                    self.network]
        if self.network == "host":
            return launcher
        unshare = shutil.which("unshare")
        if unshare is None:
            msg = ("a private network for the Milvus server needs util-linux's `unshare`, which is not on PATH; "
                   "install util-linux or use network='host'.")
            raise StoreError(msg)
        return [unshare, "--net", *([] if os.geteuid() == 0 else ["--map-root-user"]), *launcher]

    def start(self) -> str:
        """Start the server and wait until it answers; returns :attr:`uri`."""
        if self._proc is not None:
            return self.uri
        if importlib_missing("milvus"):
            msg = "the Milvus server wheel is not installed: pip install milvus==2.3.5 (57 MB)."
            raise StoreError(msg)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            # start_new_session: the launcher, milvus-server and the milvus binary share one process group
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.data_dir)
        self._proc = proc
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                code = proc.returncode
                self._proc = None
                self._raise(f"the server exited with code {code} while starting")
            if READY in _read(self.log_path):
                return self.uri
            time.sleep(0.25)
        self.stop()
        self._raise(f"the server did not answer within {self.timeout:.0f} s")
        raise AssertionError  # unreachable; _raise raises

    def _raise(self, reason: str) -> None:
        msg = (f"Milvus server in {self.data_dir} could not start: {reason} (command: {' '.join(self.command())}). "
               f"Last lines of {self.log_path}:\n{self.log_tail()}")
        raise StoreError(msg)

    def stop(self, grace: float = 3.0) -> None:
        """Kill the server's whole process group: SIGTERM, then SIGKILL after ``grace`` seconds (Milvus 2.3.5
        takes about 12 s to shut down cleanly on 2 cores; the data written before stays)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                # the group may outlive its leader for a moment: wait until no member is left
                end = time.monotonic() + wait
                while time.monotonic() < end and _group_alive(proc.pid):
                    time.sleep(0.1)
                if not _group_alive(proc.pid):
                    break
            except subprocess.TimeoutExpired:
                continue
        self.socket_path.unlink(missing_ok=True)

    def log_tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters of the launcher's log and of Milvus's own stdout/stderr logs."""
        parts = []
        for path in (self.log_path, self.data_dir / "logs" / "milvus-stderr.log"):
            try:
                with open(path, "rb") as fh:
                    fh.seek(max(0, path.stat().st_size - chars))
                    text = fh.read().decode("utf-8", "replace")
            except OSError:
                continue
            if text.strip():
                parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts) or "(no log written)"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------ the launcher (runs in the namespace)
def _loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (it starts down): SIOCGIFFLAGS, then SIOCSIFFLAGS | IFF_UP."""
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        raw = fcntl.ioctl(sock, siocgifflags, struct.pack("16sh14x", b"lo", 0))
        flags = struct.unpack("16sh14x", raw)[1]
        if not flags & iff_up:
            fcntl.ioctl(sock, siocsifflags, struct.pack("16sh14x", b"lo", flags | iff_up))


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (dst, src):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _forward(socket_path: Path, port: int) -> None:
    """Accept connections on the Unix socket and carry each to 127.0.0.1:``port`` (two threads each)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(socket_path))
    server.listen(128)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", port))
        except OSError:
            client.close()
            continue
        for sock in (client, upstream):
            if sock.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()


def _launch(data_dir: Path, port: int, network: str) -> int:
    """Run ``milvus-server`` as a child (same process group); in a private network, first bring ``lo`` up
    and forward the Unix socket to the proxy port. The wrapper prints its banner (:data:`READY`) once the
    server's own health check passed; this returns when the server ends."""
    import milvus

    if network == "private":
        _loopback_up()
        threading.Thread(target=_forward, args=(data_dir / "milvus.sock", port), daemon=True).start()
    # milvus-server picks its other ports itself (the next free one from each default).
    args = [sys.executable, "-c", "import milvus; milvus.main()", "--data", str(data_dir / "milvus"),
            "--proxy-port", str(port)]
    child = subprocess.Popen(args, env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=data_dir)
    sys.stdout.write(f"launcher: milvus {milvus.__version__} (pid {child.pid}), proxy port {port}, "
                     f"network {network}\n")
    sys.stdout.flush()
    return int(child.wait())


if __name__ == "__main__":
    sys.exit(_launch(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
