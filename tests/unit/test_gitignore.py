"""Nothing a local run leaves behind shows up in `git status`."""

import subprocess

import pytest

from tests.conftest import ROOT

# Written by `make up`, the suite and its tools: embedded servers, schemathesis' run state, caches.
LOCAL_STATE = [".hypervisor/", ".schemathesis/", ".pytest_cache/", ".ruff_cache/", ".hypothesis/"]


@pytest.mark.parametrize("path", LOCAL_STATE)
def test_local_state_is_git_ignored(path):
    ignored = subprocess.run(["git", "check-ignore", "--quiet", "--no-index", path], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{path} is not in .gitignore"
