"""`hv` is installed as a command: by `make install` into the virtualenv, and by `pip install .`."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import ROOT


def _run(command, **options):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, **options)


def test_make_install_puts_hv_in_the_virtualenv(tmp_path):
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    # The runtime requirements are this suite's own (a .pth to them, and make's stamp saying so): only the
    # project's own install step runs.
    purelib = Path(
        _run([venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    (purelib / "suite-requirements.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (venv / ".installed").touch()

    made = _run(["make", "install", f"VENV={venv}"])
    assert made.returncode == 0, made.stdout + made.stderr
    hv = venv / "bin" / "hv"
    assert hv.exists()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    answer = subprocess.run([hv, "--help"], cwd=tmp_path, capture_output=True, text=True, env=env, check=False)
    assert answer.returncode == 0, answer.stderr
    assert "agent-token" in answer.stdout


def test_pip_install_gives_the_hv_command(tmp_path):
    target = tmp_path / "site"
    installed = _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), "."])
    assert installed.returncode == 0, installed.stderr
    assert (target / "hv" / "cli.py").exists()
    assert not (target / "api").exists(), "pip install . should give the command line, not the server's packages"
    answer = subprocess.run(
        [target / "bin" / "hv", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    assert "Usage: hv" in answer.stdout
