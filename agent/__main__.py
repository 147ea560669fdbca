"""`python -m agent`: run a cluster's deployments on this host (RUNTIME.md, "The agent program").

Exit codes: 0 after a clean shutdown (SIGTERM, SIGINT / Ctrl-C); 2 when it cannot start (a flag missing
or wrong, a driver not available here, the state dir used by another agent); 3 when the server refuses
the token (401: wrong, revoked, or not an agent token): retrying cannot help, a person must act.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from agent import __version__
from agent.client import Client, Unauthorized
from agent.drivers import DRIVERS, create
from agent.drivers.base import DriverUnavailable
from agent.loop import Agent
from agent.protocol import AgentInfo

EXIT_USAGE = 2
EXIT_UNAUTHORIZED = 3

log = logging.getLogger("agent")


def parser() -> argparse.ArgumentParser:
    """The command line (flags fixed by RUNTIME.md)."""
    environment = os.environ
    command = argparse.ArgumentParser(
        prog="python -m agent",
        description="Run the deployments of one Hypervisor cluster on this host.",
        epilog="Exit codes: 0 clean shutdown, 2 cannot start (usage, driver, state dir), 3 token refused (401).",
    )
    command.add_argument(
        "--api",
        metavar="URL",
        default=environment.get("HV_API"),
        help="the server's base URL, e.g. http://127.0.0.1:8000 (env HV_API)",
    )
    command.add_argument(
        "--token",
        metavar="TOKEN",
        default=environment.get("HV_AGENT_TOKEN"),
        help="the cluster's agent token (env HV_AGENT_TOKEN; prefer it: a flag is visible to every user in ps)",
    )
    command.add_argument(
        "--driver",
        metavar="|".join(DRIVERS),
        default=environment.get("HV_AGENT_DRIVER"),
        help=f"{' or '.join(DRIVERS)} (env HV_AGENT_DRIVER)",
    )
    command.add_argument(
        "--name",
        metavar="NAME",
        default=environment.get("HV_AGENT_NAME"),
        help="this agent's name (env HV_AGENT_NAME; default: the host name)",
    )
    command.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="where runs' output and records are kept (default: $XDG_STATE_HOME/hypervisor-agent/NAME, "
        "else ~/.local/state/hypervisor-agent/NAME)",
    )
    command.add_argument(
        "--gpus", metavar="0,1,…", default="", help="this host's GPU ids, comma-separated, e.g. 0,1,2,3 (default: none)"
    )
    command.add_argument(
        "--network",
        metavar="MODE",
        default=environment.get("HV_AGENT_NETWORK"),
        help="docker driver: the network mode of the containers, e.g. none, host, bridge or a network's name "
        "(env HV_AGENT_NETWORK; default: the engine's default)",
    )
    command.add_argument("--version", action="version", version=f"hypervisor agent {__version__}")
    return command


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the agent until it is told to stop; returns the exit code."""
    command = parser()
    args = command.parse_args(argv)
    if not args.api:
        command.error("no API URL: pass --api URL or set HV_API")
    if not args.token:
        command.error(
            "no agent token: pass --token TOKEN or set HV_AGENT_TOKEN "
            "(an admin creates one: POST /api/v1/clusters/{cluster_id}/agent-tokens)"
        )
    if not args.driver:
        command.error(f"no driver: pass --driver {'|'.join(DRIVERS)} or set HV_AGENT_DRIVER")
    if args.driver not in DRIVERS:
        command.error(f"unknown driver {args.driver!r}: expected one of {', '.join(DRIVERS)}")
    gpus = [gpu.strip() for gpu in args.gpus.split(",") if gpu.strip()]
    name = args.name or socket.gethostname()
    state_dir = args.state_dir or default_state_dir(name)

    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s agent: %(message)s",
        stream=sys.stderr,
    )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock(state_dir)
        driver = create(args.driver, state_dir=state_dir, gpus=gpus, network=args.network or None)
        client = Client(args.api, args.token)
    except (DriverUnavailable, OSError, ValueError) as error:
        print(f"python -m agent: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    agent = Agent(client=client, driver=driver, info=AgentInfo(name, driver.name, __version__))
    stopping, hurry = threading.Event(), threading.Event()

    def on_signal(signum, _frame):
        if stopping.is_set():
            hurry.set()
        else:
            log.info("%s received: stopping", signal.Signals(signum).name)
            stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "agent %s %s starting: driver %s, API %s, state in %s, GPUs %s",
        name,
        __version__,
        driver.name,
        agent.client.url,
        state_dir,
        ",".join(gpus) or "none",
    )
    try:
        agent.recover()
        try:
            agent.run_forever(stopping)
        except Unauthorized as error:
            log.error(
                "the server refused the agent token (401: %s): it is wrong, revoked, or not an agent token; "
                "stopping the runs and exiting",
                error,
            )
            agent.shutdown(hurry, report=False)
            return EXIT_UNAUTHORIZED
        agent.shutdown(hurry)
        log.info("agent stopped")
        return 0
    finally:
        lock.close()


def default_state_dir(name: str) -> Path:
    """A folder of this agent's own, so two agents on one host never share runs."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "hypervisor-agent" / name


def _lock(state_dir: Path):
    """Hold the state dir for this process: a second agent on it would kill the first one's runs."""
    lock = open(state_dir / "agent.lock", "w")  # noqa: SIM115 (held open until exit)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise OSError(f"another agent is using the state dir {state_dir} (give this one its own --state-dir)") from None
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


if __name__ == "__main__":
    sys.exit(main())
