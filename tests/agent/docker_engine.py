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
