"""The process driver with real processes: exits, env, output, stops, process groups, PDEATHSIG."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agent.drivers.base import RunSpec
from agent.drivers.process import LOGS_LIMIT_BYTES, ProcessDriver
from tests.agent.conftest import ROOT, alive, wait_until

PYTHON = sys.executable


def spec(command, generation=1, env=None, grace_seconds=30.0, deployment_id="d-1") -> RunSpec:
    return RunSpec(deployment_id, generation, "job", "unused:image", command, env or {}, grace_seconds=grace_seconds)


def python(code: str) -> list[str]:
    return [PYTHON, "-c", textwrap.dedent(code)]


def finished(driver, run, timeout=10.0):
    return wait_until(lambda: driver.result(run), timeout)


def test_exit_zero_is_exited_with_code_zero_and_its_output(driver):
    run = driver.start(spec(python("print('hello'); import sys; print('oops', file=sys.stderr)")))
    result = finished(driver, run)
    assert (result.state, result.exit_code, result.message) == ("exited", 0, None)
    assert result.logs == "hello\noops\n"


def test_non_zero_exit_code_is_reported(driver):
    result = finished(driver, driver.start(spec(python("raise SystemExit(3)"))))
    assert (result.state, result.exit_code) == ("exited", 3)


def test_a_run_killed_by_a_signal_it_was_not_sent_by_a_stop_is_exited_with_128_plus_the_signal(driver):
    result = finished(driver, driver.start(spec(python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))))
    assert (result.state, result.exit_code, result.message) == ("exited", 128 + signal.SIGSEGV, "killed by SIGSEGV")


def test_env_is_added_to_the_agents_environment_without_the_agent_token(driver, monkeypatch):
    monkeypatch.setenv("FROM_AGENT", "inherited")
    monkeypatch.setenv("HV_AGENT_TOKEN", "secret-agent-token")
    code = """
        import os
        for name in ("GREETING", "FROM_AGENT", "HV_DEPLOYMENT_ID", "HV_GENERATION", "HV_AGENT_TOKEN"):
            print(name, os.environ.get(name))
    """
    result = finished(driver, driver.start(spec(python(code), generation=4, env={"GREETING": "hi there"})))
    assert result.logs.splitlines() == [
        "GREETING hi there",
        "FROM_AGENT inherited",
        "HV_DEPLOYMENT_ID d-1",
        "HV_GENERATION 4",
        "HV_AGENT_TOKEN None",
    ]


def test_logs_are_the_last_64_kib_of_the_output(driver):
    code = """
        import sys
        sys.stdout.write("x" * 100_000 + "THE END")
    """
    result = finished(driver, driver.start(spec(python(code))))
    assert len(result.logs.encode()) == LOGS_LIMIT_BYTES
    assert result.logs.endswith("xTHE END")


@pytest.mark.parametrize("character", ["é", "😀"])
def test_logs_cut_in_a_multibyte_character_stay_within_64_kib_and_valid(driver, character):
    # 100,001 bytes and more: the last 64 KiB begin one byte into a character.
    code = f"""
        import sys
        sys.stdout.buffer.write(({character!r} * (100_000 // {len(character.encode())}) + "!").encode())
    """
    result = finished(driver, driver.start(spec(python(code))))
    assert len(result.logs.encode()) <= LOGS_LIMIT_BYTES
    assert set(result.logs[:-1]) == {character}
    assert result.logs.endswith("!")


def test_stop_waits_for_a_run_that_traps_sigterm_to_finish_its_cleanup(driver):
    code = """
        import signal, sys, time
        def cleanup(*_):
            time.sleep(1)
            print("cleaned up", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, cleanup)
        print("ready", flush=True)
        time.sleep(300)
    """
    run = driver.start(spec(python(code)))
    wait_until(lambda: "ready" in (run_log(driver, run)))
    began = time.monotonic()
    driver.stop(run, grace_seconds=10, reason="preempted")
    result = finished(driver, run)
    assert time.monotonic() - began >= 1
    assert (result.state, result.exit_code) == ("stopped", 0)
    assert result.message == "preempted: exited with code 0"
    assert "cleaned up" in result.logs


def test_a_run_that_ignores_sigterm_is_sigkilled_after_the_grace(driver):
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(300)
    """
    run = driver.start(spec(python(code)))
    wait_until(lambda: "ready" in run_log(driver, run))
    began = time.monotonic()
    driver.stop(run, grace_seconds=1.5)
    time.sleep(1)
    assert driver.result(run) is None, "killed before its grace was over"
    result = finished(driver, run)
    assert 1.5 <= time.monotonic() - began < 5
    assert (result.state, result.exit_code, result.message) == ("stopped", 128 + signal.SIGKILL, "killed by SIGKILL")


def test_stop_reaches_the_whole_process_group_children_included(driver, tmp_path):
    pids = tmp_path / "pids"
    # The leader traps SIGTERM and lingers; its child (a shell's `sleep`) does not trap it.
    code = f"""
        import signal, subprocess, time
        child = subprocess.Popen(["sleep", "300"])
        open({str(pids)!r}, "w").write(str(child.pid))
        signal.signal(signal.SIGTERM, lambda *_: None)
        time.sleep(300)
    """
    run = driver.start(spec(python(code)))
    child = int(wait_until(lambda: pids.exists() and pids.read_text()))
    assert alive(child)
    driver.stop(run, grace_seconds=30)
    wait_until(lambda: not alive(child), timeout=5)
    assert driver.result(run) is None, "the leader traps SIGTERM: it runs until its grace is over"
    driver.stop(run, grace_seconds=0)  # a second stop with no grace kills now
    assert finished(driver, run).message == "killed by SIGKILL"


def test_what_a_run_leaves_behind_in_its_group_dies_with_it(driver, tmp_path):
    pids = tmp_path / "pids"
    run = driver.start(spec(["sh", "-c", f"sleep 300 & echo $! > {pids}; exit 0"]))
    result = finished(driver, run)
    assert (result.state, result.exit_code) == ("exited", 0)
    wait_until(lambda: not alive(int(pids.read_text())), timeout=5)


def test_a_run_without_a_command_fails(driver):
    for command in (None, []):
        result = driver.result(driver.start(spec(command, generation=len(command or "x"))))
        assert (result.state, result.message) == ("failed", "the process driver needs a command")


def test_a_command_that_is_not_found_fails_with_the_os_message(driver):
    result = driver.result(driver.start(spec(["no-such-program-hv", "--flag"])))
    assert result.state == "failed"
    assert result.message == "cannot start 'no-such-program-hv': No such file or directory"


def test_remove_forgets_the_run_and_deletes_its_output(driver):
    run = driver.start(spec(python("print('bye')")))
    finished(driver, run)
    assert sorted(path.suffix for path in driver.runs_dir.iterdir()) == [".json", ".log"]
    driver.remove(run)
    assert driver.runs() == []
    assert list(driver.runs_dir.iterdir()) == []


AGENT_LIKE = """
import sys, time
from agent.drivers.base import RunSpec
from agent.drivers.process import ProcessDriver

driver = ProcessDriver(sys.argv[1])
run = driver.start(RunSpec("d-1", 1, "job", "unused", sys.argv[2:]))
print(run.handle.removeprefix("pid "), flush=True)
time.sleep(300)
"""


def start_agent_like(state_dir, command) -> tuple[subprocess.Popen, int]:
    """A small parent that starts one run with the process driver and then idles; returns it and the run's pid."""
    parent = subprocess.Popen(
        [PYTHON, "-c", AGENT_LIKE, str(state_dir), *command], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    return parent, int(parent.stdout.readline())


def kill_if_alive(*pids: int) -> None:
    """Leave nothing behind when a test fails."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_run_dies_with_its_agent_even_one_killed_with_sigkill(tmp_path):
    parent, run_pid = start_agent_like(tmp_path / "state", ["sleep", "300"])
    try:
        assert alive(run_pid)
        parent.kill()
        parent.wait()
        wait_until(lambda: not alive(run_pid), timeout=5)
    finally:
        kill_if_alive(run_pid)


def test_the_next_agent_on_the_state_dir_kills_what_survived_a_sigkilled_agent(tmp_path):
    pids = tmp_path / "pids"
    parent, leader = start_agent_like(tmp_path / "state", ["sh", "-c", f"sleep 300 & echo $! > {pids}; wait"])
    descendant = int(wait_until(lambda: pids.exists() and pids.read_text().strip()))
    unrelated = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        parent.kill()
        parent.wait()
        wait_until(lambda: not alive(leader), timeout=5)
        # The death signal reaches only the leader; its child lives on until an agent comes back.
        assert alive(descendant)
        assert ProcessDriver(tmp_path / "state").recover() == []
        wait_until(lambda: not alive(descendant), timeout=5)
        assert alive(unrelated.pid)
        assert list((tmp_path / "state" / "runs").iterdir()) == []
    finally:
        kill_if_alive(leader, descendant)
        unrelated.kill()
        unrelated.wait()


def run_log(driver: ProcessDriver, run) -> str:
    path = driver.runs_dir / f"{run.deployment_id}.{run.generation}.log"
    return path.read_text() if path.exists() else ""


def test_runs_do_not_share_the_agents_process_group(driver):
    run = driver.start(spec(["sleep", "300"]))
    pid = int(run.handle.removeprefix("pid "))
    assert os.getpgid(pid) == pid != os.getpgid(0)
    driver.stop(run, grace_seconds=5)
    assert finished(driver, run).message == "killed by SIGTERM"
