"""`python -m agent`: flags, clear refusals, a clean shutdown while the API is away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.agent.conftest import ROOT

# Loopback port 1: nothing listens there, so every sync is refused at once.
UNREACHABLE = "http://127.0.0.1:1"


def agent_environment(**extra: str) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("HV_")}
    return {**environment, **extra}


def agent(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", *arguments],
        cwd=ROOT,
        env=agent_environment(**environment),
        capture_output=True,
        text=True,
        timeout=30,
    )


def start_agent(state_dir, *arguments: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "--state-dir", str(state_dir), *arguments],
        cwd=ROOT,
        env=agent_environment(HV_API=UNREACHABLE, HV_AGENT_TOKEN="token", HV_AGENT_DRIVER="process"),
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(process: subprocess.Popen, text: str) -> list[str]:
    lines = []
    for line in process.stderr:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never logged; got {lines}")


def test_help_lists_the_flags():
    finished = agent("--help")
    assert finished.returncode == 0
    for flag in (
        "--api URL",
        "--token TOKEN",
        "--driver docker|process",
        "--name NAME",
        "--state-dir DIR",
        "--gpus",
        "--network MODE",
    ):
        assert flag in finished.stdout
    for variable in ("HV_API", "HV_AGENT_TOKEN", "HV_AGENT_DRIVER", "HV_AGENT_NAME", "HV_AGENT_NETWORK"):
        assert variable in finished.stdout


def test_a_missing_token_is_a_clear_usage_error(tmp_path):
    finished = agent("--api", UNREACHABLE, "--driver", "process", "--state-dir", str(tmp_path))
    assert finished.returncode == 2
    assert "no agent token: pass --token TOKEN or set HV_AGENT_TOKEN" in finished.stderr


def test_the_environment_stands_in_for_the_flags(tmp_path):
    finished = agent(
        "--state-dir",
        str(tmp_path),
        HV_API=UNREACHABLE,
        HV_AGENT_DRIVER="docker",
        HV_AGENT_TOKEN="t",
        DOCKER_HOST="unix:///nonexistent/docker.sock",
    )
    assert finished.returncode == 2
    assert "cannot reach the Docker engine" in finished.stderr


def test_an_unknown_driver_is_refused():
    finished = agent("--api", UNREACHABLE, "--token", "t", "--driver", "podman")
    assert finished.returncode == 2
    assert "unknown driver 'podman': expected one of docker, process" in finished.stderr


def test_while_the_api_is_unreachable_it_backs_off_and_a_sigterm_stops_it_cleanly(tmp_path):
    process = start_agent(tmp_path, "--name", "host-1")
    try:
        started = read_until(process, "starting")
        assert "agent host-1" in started[-1]
        assert f"API {UNREACHABLE}/api/v1/agent/sync" in started[-1]
        failed = read_until(process, "sync failed (1 in a row)")
        assert "cannot reach" in failed[-1]
        assert "retrying in" in failed[-1]
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        assert process.wait(timeout=10) == 0
        assert "SIGTERM received: stopping" in rest
        assert "agent stopped" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_second_agent_on_the_same_state_dir_is_refused(tmp_path):
    first = start_agent(tmp_path)
    try:
        read_until(first, "starting")
        second = agent("--state-dir", str(tmp_path), HV_API=UNREACHABLE, HV_AGENT_TOKEN="t", HV_AGENT_DRIVER="process")
        assert second.returncode == 2
        assert f"another agent is using the state dir {tmp_path}" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=10) == 0


def test_the_agent_imports_nothing_of_the_server():
    code = (
        "import sys, pkgutil, importlib, agent\n"
        "for module in pkgutil.walk_packages(agent.__path__, 'agent.'):\n"
        "    importlib.import_module(module.name)\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'api', 'shared', 'worker', 'devtools'}))\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "[]"
