"""The commands of `hv` (API.md, "The command line: `hv`").

Exit status: 0 on success, 1 when the API refused (its message printed) or cannot be reached, 2 on bad
usage (Click's own). `--api URL` / `HV_API` and `--json` work before the command or after it.
"""

from __future__ import annotations

import functools
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from rich.text import Text

from hv import output
from hv.client import DEFAULT_API, ApiError, Client, NotLoggedIn, Unreachable
from hv.credentials import Store

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
WAIT_INTERVAL_SECONDS = 1.0


class Failure(click.ClickException):
    """Exit 1 with the API's message (and what to do), printed to stderr."""

    exit_code = 1

    def show(self, file=None) -> None:
        output.err.print(Text("Error: ", style="bold red") + Text(self.message))


@dataclass
class Options:
    api: str
    as_json: bool

    def client(self) -> Client:
        try:
            return Client(self.api, Store())
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="'--api' / HV_API") from None


def _describe(error: ApiError) -> str:
    lines = [error.message]
    lines += [f"  {field}: {message}" for field, message in _flatten(error.errors) if message != error.message]
    if error.hint:
        lines[0] = f"{error.message.rstrip('.')} ({error.hint})."
    return "\n".join(lines)


def _flatten(errors: Any, prefix: str = "") -> list[tuple[str, str]]:
    """flask-smorest's {"json": {"cpu": ["..."]}} as ("cpu", "..."); nested fields dotted."""
    if isinstance(errors, dict):
        flat = []
        for key, value in errors.items():
            name = "" if not prefix and key in ("json", "query", "headers") else f"{prefix}{key}"
            flat += _flatten(value, f"{name}." if name else "")
        return flat
    if isinstance(errors, list) and all(isinstance(item, str) for item in errors):
        return [(prefix.rstrip(".") or "body", " ".join(errors))]
    return [(prefix.rstrip(".") or "body", str(errors))]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--api",
    envvar="HV_API",
    default=DEFAULT_API,
    show_default=True,
    metavar="URL",
    help="The API's address (or HV_API).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables.")
@click.pass_context
def cli(context: click.Context, api: str, as_json: bool) -> None:
    """Hypervisor's command line: submit deployments to GPU clusters and follow them."""
    context.obj = Options(api, as_json)


def command(group: click.Group = cli, name: str | None = None, **settings) -> Callable:
    """A command of `group` that also takes --api and --json itself, and turns the API's refusals into exit 1."""

    def decorate(function: Callable) -> click.Command:
        @click.option("--api", "command_api", metavar="URL", help="The API's address (or HV_API).")
        @click.option("--json", "command_json", is_flag=True, help="Print the API's JSON instead of a table.")
        @functools.wraps(function)
        def run(*args, command_api: str | None, command_json: bool, **kwargs):
            parent: Options = click.get_current_context().find_root().obj
            options = Options(command_api or parent.api, command_json or parent.as_json)
            try:
                return function(options, *args, **kwargs)
            except ApiError as error:
                raise Failure(_describe(error)) from None
            except (NotLoggedIn, Unreachable) as error:
                raise Failure(str(error)) from None

        return group.command(name, **settings)(run)

    return decorate


# --- sessions


@command()
@click.option("--username", prompt=True, help="Prompted for when not given.")
@click.option("--password", prompt=True, hide_input=True, help="Prompted for (hidden) when not given.")
def login(options: Options, username: str, password: str) -> None:
    """Log in; the tokens are kept in $XDG_CONFIG_HOME/hypervisor/ (mode 0600)."""
    client = options.client()
    answer = client.login(username, password)
    if options.as_json:
        output.print_json(answer)
    else:
        output.out.print(f"Logged in to {client.api} as {username}.")


@command()
def logout(options: Options) -> None:
    """Log out: the session ends on the server and its tokens are forgotten here."""
    client = options.client()
    was_logged_in = client.logout()
    if not options.as_json:
        output.out.print("Logged out." if was_logged_in else f"Not logged in to {client.api}.")


# --- organizations and clusters


@command()
def orgs(options: Options) -> None:
    """My organizations and my role in each."""
    organizations = options.client().get_all("/organizations")
    if options.as_json:
        return output.print_json(organizations)
    grid = output.table("ID", "NAME", "ROLE")
    for organization in organizations:
        grid.add_row(organization["id"], organization["name"], organization["role"])
    output.out.print(grid)


@command()
@click.option("--org", "org_id", metavar="ID", help="Only this organization's (default: all of mine).")
def clusters(options: Options, org_id: str | None) -> None:
    """Clusters, with their capacity, what is allocated, and their queues."""
    client = options.client()
    org_ids = [org_id] if org_id else [organization["id"] for organization in client.get_all("/organizations")]
    found = [cluster for org in org_ids for cluster in client.get_all(f"/organizations/{org}/clusters")]
    if options.as_json:
        return output.print_json(found)
    grid = output.table("ID", "NAME", "RUNTIME", "CPU", "RAM GB", "GPU", "QUEUED", "RUNNING")
    for cluster in found:
        capacity, allocated, counts = cluster["capacity"], cluster["allocated"], cluster["deployments"]

        def used(resource: str, capacity=capacity, allocated=allocated) -> str:
            return f"{output.number(allocated[resource])}/{output.number(capacity[resource])}"

        runtime = cluster.get("runtime", "")
        agent = cluster.get("agent")
        if agent:
            runtime += f" ({agent['name']}, {'live' if agent.get('live') else 'not live'})"
        grid.add_row(
            cluster["id"],
            cluster["name"],
            runtime,
            used("cpu"),
            used("ram_gb"),
            used("gpu"),
            str(counts["queued"]),
            str(counts["running"]),
        )
    output.out.print(grid)
    if found:
        output.out.print("CPU, RAM GB and GPU: allocated/capacity.", style="dim")


# --- submitting


def _env(context, parameter, values: tuple[str, ...]) -> dict[str, str] | None:
    env = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{item!r} is not K=V.")
        env[name] = value
    return env or None


def _command(context, parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    try:
        return shlex.split(value)
    except ValueError as error:
        raise click.BadParameter(f"{value!r}: {error}.") from None


def deployment_options(function: Callable) -> Callable:
    """The options of a single submit (API.md, RUNTIME.md), shared by `submit` and `dry-run`."""
    decorators = [
        click.option("--cluster", "cluster_id", required=True, metavar="ID", help="The cluster to run on."),
        click.option("--name", required=True, help="A name for the deployment."),
        click.option("--image", required=True, help="The Docker image, e.g. ghcr.io/acme/train:1."),
        click.option("--cpu", type=float, required=True, help="CPU cores (e.g. 0.5)."),
        click.option("--ram-gb", type=float, required=True, help="Memory in GB."),
        click.option("--gpu", type=int, required=True, help="GPUs."),
        click.option("--priority", type=int, help="0-1000 (the server's default: 500)."),
        click.option("--depends-on", multiple=True, metavar="ID", help="A deployment to wait for (repeatable)."),
        click.option("--max-retries", type=int, help="Failed runs retried (0-10, default 3)."),
        click.option("--run-seconds", type=float, help="Simulated clusters: completes this long after it starts."),
        click.option(
            "--command",
            "command_line",
            callback=_command,
            metavar='"ARGV"',
            help='The command to run, split like a shell would (no shell runs it): --command "python train.py".',
        ),
        click.option(
            "--env", multiple=True, callback=_env, metavar="K=V", help="An environment variable (repeatable)."
        ),
        click.option("--grace-seconds", type=int, help="How long a stop waits after SIGTERM (default 30)."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _body(**options) -> dict:
    names = {"command_line": "command", "depends_on": "depends_on"}
    body = {names.get(key, key): value for key, value in options.items() if value is not None}
    if "depends_on" in body:
        body["depends_on"] = list(body["depends_on"])
        if not body["depends_on"]:
            del body["depends_on"]
    return body


@command()
@deployment_options
@click.option("--wait", is_flag=True, help="Follow it (status and reason as they change) until it runs or ends.")
def submit(options: Options, cluster_id: str, wait: bool, **fields) -> None:
    """Submit a deployment to a cluster."""
    client = options.client()
    deployment = client.post(f"/clusters/{cluster_id}/deployments", _body(**fields))
    if wait:
        if not options.as_json:
            output.out.print(f"Submitted {deployment['name']} ({deployment['id']}).")
        deployment = _follow(client, deployment, progress=output.err if options.as_json else output.out)
    if options.as_json:
        output.print_json(deployment)
    elif not wait:
        _show(deployment)
    if wait and deployment["status"] in ("failed", "cancelled"):
        sys.exit(1)


def _follow(client: Client, deployment: dict, progress) -> dict:
    """Poll the deployment until it runs or ends, printing each change of status or reason."""
    seen = None
    try:
        with progress.status("", spinner="dots") as spinner:
            while True:
                state = (deployment["status"], deployment.get("reason"), deployment.get("position"))
                if state != seen:
                    seen = state
                    line = Text(time.strftime("%H:%M:%S  "), style="dim") + output.status_text(state[0])
                    if state[2]:
                        line += Text(f"  #{state[2]}")
                    if state[1]:
                        line += Text(f"  {state[1]}")
                    progress.print(line)
                    spinner.update(Text(f"{deployment['name']}: ") + output.status_text(state[0]))
                if deployment["status"] != "queued":
                    return deployment
                time.sleep(WAIT_INTERVAL_SECONDS)
                deployment = client.get(f"/deployments/{deployment['id']}")
    except KeyboardInterrupt:
        progress.print(f"Stopped following; it goes on. See it with: hv show {deployment['id']}")
        sys.exit(130)


@command(name="dry-run")
@deployment_options
def dry_run(options: Options, cluster_id: str, **fields) -> None:
    """What a scheduling pass would do with this request now (nothing is stored)."""
    verdict = options.client().post(f"/clusters/{cluster_id}/deployments/dry-run", _body(**fields))
    if options.as_json:
        return output.print_json(verdict)
    outcome = verdict.get("outcome", "")
    rows = [("outcome", Text(outcome, style=output.OUTCOME_STYLES.get(outcome, "")))]
    if verdict.get("position") is not None:
        rows.append(("position", verdict["position"]))
    rows.append(("reason", verdict.get("reason")))
    output.out.print(output.key_values(rows))
    if verdict.get("victims"):
        grid = output.table("ID", "NAME", "PRIORITY", title="Would preempt")
        for victim in verdict["victims"]:
            grid.add_row(victim["id"], victim["name"], str(victim["priority"]))
        output.out.print(grid)


# --- reading


@command()
@click.option("--cluster", "cluster_id", metavar="ID", help="One cluster's, in scheduling order.")
@click.option("--org", "org_id", metavar="ID", help="Every cluster's of an organization, newest first.")
@click.option("--status", type=click.Choice(STATUSES), help="Only those with this status.")
def ls(options: Options, cluster_id: str | None, org_id: str | None, status: str | None) -> None:
    """Deployments of a cluster (--cluster) or an organization (--org), with position and reason."""
    if bool(cluster_id) == bool(org_id):
        raise click.UsageError("Give one of --cluster ID or --org ID.")
    path = f"/clusters/{cluster_id}/deployments" if cluster_id else f"/organizations/{org_id}/deployments"
    found = options.client().get_all(path, {"status": status})
    if options.as_json:
        return output.print_json(found)
    columns = ["ID", "NAME", "STATUS", "POS", "PRIO", "RESOURCES", "REASON"]
    if org_id:
        columns.insert(2, "CLUSTER")
    grid = output.table(*columns)
    for deployment in found:
        row = [
            deployment["id"],
            deployment["name"],
            output.status_text(deployment["status"]),
            output.number(deployment.get("position")),
            str(deployment["priority"]),
            output.resources(deployment["resources"]),
            deployment.get("reason") or "",
        ]
        if org_id:
            row.insert(2, deployment["cluster_id"])
        grid.add_row(*row)
    output.out.print(grid)


def _show(deployment: dict) -> None:
    runtime = deployment.get("runtime") or {}
    rows = [
        ("id", deployment["id"]),
        ("name", deployment["name"]),
        ("status", output.status_text(deployment["status"])),
        ("position", output.number(deployment.get("position"))),
        ("reason", deployment.get("reason")),
        ("cluster", deployment["cluster_id"]),
        ("image", deployment["image"]),
        ("command", shlex.join(deployment["command"]) if deployment.get("command") else None),
        ("env", " ".join(f"{k}={v}" for k, v in (deployment.get("env") or {}).items()) or None),
        ("resources", output.resources(deployment["resources"])),
        ("priority", deployment["priority"]),
        ("depends on", ", ".join(deployment.get("depends_on") or []) or None),
        ("attempts", f"{deployment['attempts']} (retries allowed: {deployment['max_retries']})"),
        ("preemptions", deployment["preemptions"]),
        ("run seconds", output.number(deployment.get("run_seconds"))),
        ("generation", deployment.get("generation")),
        ("runtime", ", ".join(f"{k} {v}" for k, v in runtime.items() if v is not None) or None),
        ("created", output.when(deployment["created_at"])),
        ("started", output.when(deployment.get("started_at"))),
        ("finished", output.when(deployment.get("finished_at"))),
    ]
    output.out.print(output.key_values([(key, value) for key, value in rows if value not in (None, "")]))


@command()
@click.argument("deployment_id", metavar="ID")
def show(options: Options, deployment_id: str) -> None:
    """One deployment."""
    deployment = options.client().get(f"/deployments/{deployment_id}")
    if options.as_json:
        return output.print_json(deployment)
    _show(deployment)


@command()
@click.argument("deployment_id", metavar="[ID]", required=False)
@click.option("--cluster", "cluster_id", metavar="ID", help="A cluster's history instead (newest first).")
@click.option("--org", "org_id", metavar="ID", help="An organization's audit log instead (admins; newest first).")
def events(options: Options, deployment_id: str | None, cluster_id: str | None, org_id: str | None) -> None:
    """A deployment's history (oldest first), or a cluster's or organization's (--cluster, --org)."""
    if sum(bool(given) for given in (deployment_id, cluster_id, org_id)) != 1:
        raise click.UsageError("Give one of ID, --cluster ID or --org ID.")
    if deployment_id:
        path = f"/deployments/{deployment_id}/events"
    elif cluster_id:
        path = f"/clusters/{cluster_id}/events"
    else:
        path = f"/organizations/{org_id}/events"
    found = options.client().get_all(path)
    if options.as_json:
        return output.print_json(found)
    grid = output.table("AT (UTC)", "TYPE", "BY", "MESSAGE")
    for event in found:
        grid.add_row(output.when(event["at"]), event["type"], event.get("actor") or "", event["message"])
    output.out.print(grid)


@command()
@click.argument("deployment_id", metavar="ID")
def logs(options: Options, deployment_id: str) -> None:
    """The output of its latest run, as its agent sent it (the last 64 KiB)."""
    answer = options.client().get(f"/deployments/{deployment_id}/logs")
    if options.as_json:
        return output.print_json(answer)
    text = answer.get("logs") or ""
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    sys.stdout.flush()
    note = f"generation {answer.get('generation')}"
    if answer.get("truncated"):
        note += ", truncated: only the last 64 KiB are kept"
    if not text:
        note += ", no output received from an agent"
    output.err.print(f"({note})", style="dim")


# --- actions


def _act(options: Options, deployment_id: str, action: str, body: dict | None = None) -> None:
    deployment = options.client().post(f"/deployments/{deployment_id}/{action}", body)
    if options.as_json:
        return output.print_json(deployment)
    line = Text(f"{deployment['name']} ({deployment['id']}): ") + output.status_text(deployment["status"])
    if deployment.get("reason"):
        line += Text(f"  {deployment['reason']}")
    output.out.print(line)


@command()
@click.argument("deployment_id", metavar="ID")
def cancel(options: Options, deployment_id: str) -> None:
    """Cancel a queued or running deployment."""
    _act(options, deployment_id, "cancel")


@command()
@click.argument("deployment_id", metavar="ID")
def complete(options: Options, deployment_id: str) -> None:
    """Mark a running deployment completed (simulated clusters)."""
    _act(options, deployment_id, "complete")


@command()
@click.argument("deployment_id", metavar="ID")
@click.option("--reason", help="Why it failed.")
def fail(options: Options, deployment_id: str, reason: str | None) -> None:
    """Mark a running deployment's run failed (simulated clusters); it is retried while retries are left."""
    _act(options, deployment_id, "fail", {"reason": reason} if reason else None)


# --- agent tokens


@cli.group(name="agent-token")
def agent_token() -> None:
    """Tokens for the agents that run a cluster's deployments (admins)."""


@command(agent_token, name="create")
@click.option("--cluster", "cluster_id", required=True, metavar="ID")
@click.option("--name", required=True, help="Which agent or host it is for.")
def agent_token_create(options: Options, cluster_id: str, name: str) -> None:
    """Create a token; it is shown this once only."""
    created = options.client().post(f"/clusters/{cluster_id}/agent-tokens", {"name": name})
    if options.as_json:
        return output.print_json(created)
    output.out.print(output.key_values([("id", created["id"]), ("name", created["name"])]))
    output.out.print(Text(created["token"], style="bold"))
    output.err.print(
        "Shown once: only its hash is stored. Start the agent with HV_AGENT_TOKEN=<it> python -m agent --api …",
        style="dim",
    )


@command(agent_token, name="ls")
@click.option("--cluster", "cluster_id", required=True, metavar="ID")
def agent_token_ls(options: Options, cluster_id: str) -> None:
    """A cluster's tokens (never their secrets)."""
    found = options.client().get_all(f"/clusters/{cluster_id}/agent-tokens")
    if options.as_json:
        return output.print_json(found)
    grid = output.table("ID", "NAME", "CREATED (UTC)", "LAST USED (UTC)")
    for token in found:
        grid.add_row(token["id"], token["name"], output.when(token["created_at"]), output.when(token["last_used_at"]))
    output.out.print(grid)


@command(agent_token, name="revoke")
@click.option("--cluster", "cluster_id", required=True, metavar="ID")
@click.argument("token_id", metavar="TOKEN_ID")
def agent_token_revoke(options: Options, cluster_id: str, token_id: str) -> None:
    """Revoke a token: the agent using it is refused from its next call."""
    options.client().delete(f"/clusters/{cluster_id}/agent-tokens/{token_id}")
    if not options.as_json:
        output.out.print(f"Revoked {token_id}.")


def main() -> None:
    """The `hv` entry point."""
    cli(prog_name="hv", auto_envvar_prefix=None)


if __name__ == "__main__":
    main()
