"""`hv` as a user runs it: a subprocess against the API served over HTTP on a free loopback port, with a
config folder of its own (XDG_CONFIG_HOME in the test's tmp dir)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import PASSWORD, ROOT


@dataclass
class Served:
    """The test app over HTTP: its base URL, and every request it received ("METHOD /path")."""

    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def served(app, clean):
    served = Served("")

    def recording(environ, start_response):
        served.requests.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}")
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, recording, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_port}"
    yield served
    server.shutdown()
    thread.join(10)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)


class Hv:
    """Runs `python -m hv …` (what .venv/bin/hv runs) against the served API."""

    def __init__(self, url: str, config_home: Path):
        self.url, self.config_home = url, config_home
        self.env = {**os.environ, "HV_API": url, "XDG_CONFIG_HOME": str(config_home), "COLUMNS": "250"}
        self.env.pop("NO_COLOR", None)

    @property
    def folder(self) -> Path:
        return self.config_home / "hypervisor"

    @property
    def credentials_path(self) -> Path:
        return self.folder / "credentials.json"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "hv", *args]

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> Result:
        completed = subprocess.run(
            self.command(*args),
            cwd=ROOT,
            env=self.env,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(completed.returncode, completed.stdout, completed.stderr)

    def login(self, identity, password: str = PASSWORD) -> Result:
        result = self("login", "--username", identity.username, "--password", password)
        assert result.code == 0, result.stderr
        return result

    def stored(self) -> dict:
        """The credentials stored for the served API."""
        return json.loads(self.credentials_path.read_text())[self.url]

    def store(self, **tokens: str) -> None:
        """Replace stored tokens (to forge an expired one, as time would)."""
        entries = json.loads(self.credentials_path.read_text())
        entries[self.url].update(tokens)
        self.credentials_path.write_text(json.dumps(entries))


@pytest.fixture
def hv(served, tmp_path):
    return Hv(served.url, tmp_path / "config")
