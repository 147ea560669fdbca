"""A real Docker Engine for the docker driver's tests, and a busybox image made offline.

The engine is the one of DOCKER_HOST (else the default socket). Without one the tests skip, saying how
to enable them, unless HV_REQUIRE_DOCKER=1 (set by .ci/run, which starts an engine): then they fail.
The image is a static busybox imported as a root filesystem (`docker import`): no registry needed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import tarfile

import pytest

IMAGE = "hv-test/busybox:1"
BUSYBOX_LINKS = ("sh", "sleep", "echo", "head", "tr", "cat", "true", "false", "kill", "seq", "env")
ENABLE = (
    "start a Docker engine and point DOCKER_HOST at it (as root, `.ci/run` does both: Debian's docker.io "
    "and busybox-static); HV_REQUIRE_DOCKER=1 turns this skip into a failure"
)


def unavailable(reason: str):
    """Skip the test, or fail it when the Docker tests are required (HV_REQUIRE_DOCKER=1)."""
    message = f"{reason}: {ENABLE}"
    if os.environ.get("HV_REQUIRE_DOCKER") == "1":
        pytest.fail(f"HV_REQUIRE_DOCKER=1 but {message}", pytrace=False)
    pytest.skip(message)


@functools.cache
def _probe() -> tuple[object | None, str | None]:
    try:
        import docker

        engine = docker.from_env(timeout=30).api
        engine.ping()
    except Exception as error:  # any failure means: no engine here
        return None, f"no Docker engine answers ({error})"
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        return None, "no static busybox to build the test image from (Debian's busybox-static)"
    try:
        engine.inspect_image(IMAGE)
    except docker.errors.ImageNotFound:
        engine.import_image_from_data(_rootfs(busybox), repository=IMAGE.split(":")[0], tag=IMAGE.split(":")[1])
    return engine, None


def engine():
    """The engine's low-level client (the test image imported); skips or fails without one."""
    client, reason = _probe()
    if client is None:
        unavailable(reason)
    return client


def _rootfs(busybox: str) -> bytes:
    """A tar of /bin/busybox and its links, as `tar -C folder -c . | docker import -` would get."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        for folder in ("bin", "tmp"):
            entry = tarfile.TarInfo(folder)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            archive.addfile(entry)
        with open(busybox, "rb") as binary:
            entry = tarfile.TarInfo("bin/busybox")
            entry.size, entry.mode = os.path.getsize(busybox), 0o755
            archive.addfile(entry, binary)
        for link in BUSYBOX_LINKS:
            entry = tarfile.TarInfo(f"bin/{link}")
            entry.type, entry.linkname = tarfile.SYMTYPE, "busybox"
            archive.addfile(entry)
    return data.getvalue()


def remove_cluster_containers(client, cluster_id: str) -> None:
    """Leave no container of a test's cluster behind."""
    import docker.errors

    for container in client.containers(all=True, filters={"label": f"hypervisor.cluster={cluster_id}"}):
        with contextlib.suppress(docker.errors.NotFound):
            client.remove_container(container["Id"], force=True)


def engine_socket() -> str:
    """The path of the engine's unix socket (DOCKER_HOST, else the default)."""
    address = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not address.startswith("unix://"):
        pytest.skip(f"the engine is not on a unix socket ({address})")
    return address.removeprefix("unix://")


class EngineProxy:
    """A unix socket relaying to the engine's, which calls `intercept(first bytes of a request)` on each chunk
    the client sends: True drops the chunk and the connection (the request never reaches the engine)."""

    def __init__(self, path: str, intercept):
        import socket
        import threading

        self.path, self.intercept, self.upstream = path, intercept, engine_socket()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            threading.Thread(target=self._relay, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._relay, args=(upstream, client, False), daemon=True).start()

    def _relay(self, source, target, inspect: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if inspect and self.intercept(chunk):
                    break
                target.sendall(chunk)
        except OSError:
            pass
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.close()

    def close(self) -> None:
        self.listener.close()


def restart_engine() -> None:
    """Stop the engine of DOCKER_HOST with SIGTERM and start it again with the same arguments (same data
    root): for a private engine this test run may restart (.ci/run's); skips for any other."""
    import signal
    import subprocess
    import time

    engine()
    socket_path = engine_socket()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = [part.decode() for part in cmdline.read().split(b"\0") if part]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "dockerd" and f"unix://{socket_path}" in argv:
            pid = int(entry)
            break
    else:
        pytest.skip(f"no dockerd of this user serving {socket_path} to restart (start a private one: .ci/run)")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    log_path = os.path.join(os.path.dirname(socket_path), "dockerd-restarted.log")
    with open(log_path, "ab") as log:
        subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    import docker

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            docker.from_env(timeout=5).api.ping()
            return
        except Exception:
            time.sleep(0.2)
    pytest.fail(f"the restarted dockerd did not answer within 60 s (its log: {log_path})")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
