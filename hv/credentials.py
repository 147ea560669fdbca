"""Where `hv` keeps its tokens: `$XDG_CONFIG_HOME/hypervisor/credentials.json` (0600, its folder 0700).

One entry per API base URL, so that a token is only ever sent to the server that issued it. Every write
replaces the file atomically (a temporary file renamed over it): the server rotates refresh tokens and
treats a spent one presented again as theft, so a pair must never be half written or lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    """One session's token pair, and who it belongs to."""

    username: str
    access_token: str
    refresh_token: str


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/hypervisor`, or `~/.config/hypervisor` (a relative XDG_CONFIG_HOME is ignored, as the
    XDG spec says)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "hypervisor"


class Store:
    """The credentials file: read, write atomically, and a lock for read-refresh-write."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder or config_dir()
        self.path = self.folder / "credentials.json"

    def _entries(self) -> dict:
        try:
            entries = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def load(self, api: str) -> Credentials | None:
        """The credentials for this API, or None when not logged in to it."""
        entry = self._entries().get(api)
        try:
            return Credentials(entry["username"], entry["access_token"], entry["refresh_token"])
        except (TypeError, KeyError):
            return None

    def save(self, api: str, credentials: Credentials) -> None:
        """Store (or replace) the credentials for this API."""
        entries = self._entries()
        entries[api] = asdict(credentials)
        self._write(entries)

    def remove(self, api: str) -> bool:
        """Forget the credentials for this API; whether there were any."""
        entries = self._entries()
        if entries.pop(api, None) is None:
            return False
        self._write(entries)
        return True

    def _ensure_folder(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)

    def _write(self, entries: dict) -> None:
        self._ensure_folder()
        descriptor, temporary = tempfile.mkstemp(prefix=".credentials-", dir=self.folder)  # created 0600
        try:
            with os.fdopen(descriptor, "w") as file:
                json.dump(entries, file, indent=2)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes: two `hv` refreshing at once would spend one refresh token twice,
        which the server takes for theft and answers by ending the session."""
        self._ensure_folder()
        descriptor = os.open(self.folder / "credentials.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)
