"""`hv` against the real API over HTTP: what it prints, what it sends, how it exits (API.md, "The command
line: `hv`"): 0 on success, 1 when the API refused (its message printed), 2 on bad usage."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import stat
import subprocess
import time

import jwt
import pytest

from tests.conftest import ROOT


def api_json(client, identity, path, **query):
    response = client.get(f"/api/v1{path}", headers=identity.headers, query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def table_rows(text: str) -> list[list[str]]:
    """The cells of a printed table's rows, cut where its header's columns start (two spaces or more apart)."""
    header, _rule, *lines = text.splitlines()
    starts = [0, *(match.end() for match in re.finditer(r" {2,}", header))]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [[line[start:end].strip() for start, end in bounds] for line in lines if line.strip()]


# --- logging in and out


def test_login_stores_the_token_pair_readable_by_the_user_alone(hv, auth):
    user = auth.user()
    result = hv.login(user)
    assert f"as {user.username}" in result.stdout
    assert stat.S_IMODE(hv.credentials_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(hv.folder.stat().st_mode) == 0o700
    stored = hv.stored()
    assert stored["username"] == user.username
    assert stored["access_token"].count(".") == 2 and stored["refresh_token"].count(".") == 2
    assert hv("orgs").code == 0


def test_login_prompts_for_what_is_not_given(hv, auth):
    user = auth.user()
    result = hv("login", input=f"{user.username}\ncorrect horse battery\n")
    assert result.code == 0, result.stderr
    assert "correct horse" not in result.stdout  # the password prompt does not echo
    assert hv.stored()["username"] == user.username


def test_a_wrong_password_exits_1_with_the_apis_message(hv, auth, client):
    user = auth.user()
    result = hv("login", "--username", user.username, "--password", "wrong password!")
    assert result.code == 1
    refused = client.post("/api/v1/auth/login", json={"username": user.username, "password": "wrong password!"})
    assert refused.status_code == 401
    assert refused.json["message"] in result.stderr
    assert not hv.credentials_path.exists()


def test_without_a_login_every_command_says_run_hv_login(hv):
    for command in (["orgs"], ["clusters"], ["show", "00000000-0000-0000-0000-000000000000"]):
        result = hv(*command)
        assert result.code == 1, command
        assert "run hv login" in result.stderr
        assert "Traceback" not in result.stderr


def test_credentials_are_kept_per_api_and_never_sent_to_another(hv, auth, served):
    hv.login(auth.user())
    other = hv("--api", "http://127.0.0.2:9", "orgs")
    assert other.code == 1
    assert "Not logged in to http://127.0.0.2:9" in other.stderr


def test_logout_ends_the_session_on_the_server_and_forgets_it(hv, auth, client):
    hv.login(auth.user())
    access_token = hv.stored()["access_token"]
    result = hv("logout")
    assert result.code == 0 and "Logged out" in result.stdout
    assert client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {access_token}"}).status_code == 401
    assert hv.url not in json.loads(hv.credentials_path.read_text())
    assert "run hv login" in hv("orgs").stderr


def test_an_unreachable_api_exits_1_and_says_where_it_looked(hv, auth):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = hv("--api", f"http://127.0.0.1:{port}", "login", "--username", "x", "--password", "y")
    assert result.code == 1
    assert f"Cannot reach the API at http://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# --- tokens refreshed when they expire


def _forged_access_token(app, stored: dict, **claims) -> str:
    """An access token of the stored session, signed by the server, with the given claims (e.g. a past exp)."""
    from flask_jwt_extended import create_access_token

    session_claims = jwt.decode(stored["access_token"], options={"verify_signature": False})
    with app.app_context():
        return create_access_token(
            identity=session_claims["sub"], additional_claims={"sid": session_claims["sid"], **claims}
        )


def test_an_expired_access_token_is_refreshed_and_the_new_pair_stored(hv, auth, app, served, client):
    hv.login(auth.user())
    hv.store(access_token=_forged_access_token(app, hv.stored(), exp=int(time.time()) - 60))
    spent = hv.stored()
    served.requests.clear()

    result = hv("orgs")
    assert result.code == 0, result.stderr
    assert served.requests.count("POST /api/v1/auth/refresh") == 1
    fresh = hv.stored()
    assert fresh["access_token"] != spent["access_token"]
    assert fresh["refresh_token"] != spent["refresh_token"], "the rotated refresh token was not stored"
    assert stat.S_IMODE(hv.credentials_path.stat().st_mode) == 0o600
    # The new pair works without another refresh; the spent refresh token is what the server would call theft.
    served.requests.clear()
    assert hv("orgs").code == 0
    assert "POST /api/v1/auth/refresh" not in served.requests
    assert (
        client.post("/api/v1/auth/refresh", headers={"Authorization": f"Bearer {fresh['refresh_token']}"}).status_code
        == 200
    )


def test_a_token_the_server_refuses_before_its_expiry_is_refreshed_once(hv, auth, served):
    hv.login(auth.user())
    claims = jwt.decode(hv.stored()["access_token"], options={"verify_signature": False})
    hv.store(access_token=jwt.encode(claims, "not the server's key, at least 32 bytes long", algorithm="HS256"))
    served.requests.clear()
    result = hv("orgs")
    assert result.code == 0, result.stderr
    assert served.requests == ["GET /api/v1/organizations", "POST /api/v1/auth/refresh", "GET /api/v1/organizations"]


def test_concurrent_commands_spend_the_refresh_token_once(hv, auth, app, served):
    hv.login(auth.user())
    hv.store(access_token=_forged_access_token(app, hv.stored(), exp=int(time.time()) - 60))
    served.requests.clear()
    processes = [
        subprocess.Popen(hv.command("orgs"), cwd=ROOT, env=hv.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    outcomes = [(process.wait(60), process.stderr.read().decode()) for process in processes]
    for process in processes:
        process.stdout.close()
        process.stderr.close()
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert served.requests.count("POST /api/v1/auth/refresh") == 1


def test_an_ended_session_says_run_hv_login_and_forgets_the_tokens(hv, auth, client, app):
    hv.login(auth.user())
    stored = hv.stored()
    assert (
        client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {stored['access_token']}"}).status_code
        == 204
    )
    result = hv("orgs")
    assert result.code == 1
    assert "run hv login" in result.stderr
    assert hv.url not in json.loads(hv.credentials_path.read_text())


# --- usage


SUBMIT = ["--cluster", "c", "--name", "n", "--image", "i", "--cpu", "1", "--ram-gb", "1", "--gpu", "0"]


@pytest.mark.parametrize(
    "arguments",
    [
        ["no-such-command"],
        ["submit", "--cluster", "c", "--name", "n"],  # required options missing
        ["submit", *SUBMIT, "--cpu", "x"],
        ["submit", *SUBMIT, "--env", "NOEQUALS"],
        ["submit", *SUBMIT, "--command", "python 'unbalanced"],
        ["dry-run", *SUBMIT, "--wait"],
        ["ls"],
        ["ls", "--cluster", "a", "--org", "b"],
        ["ls", "--cluster", "a", "--status", "sleeping"],
        ["events"],
        ["show"],
        ["fail"],
        ["agent-token", "create", "--cluster", "c"],
        ["agent-token", "revoke", "--cluster", "c"],
        ["--api", "ftp://example.com", "orgs"],
    ],
    ids=lambda arguments: " ".join(arguments)[:60],
)
def test_bad_usage_exits_2_before_calling_the_api(hv, served, arguments):
    result = hv(*arguments)
    assert result.code == 2, (result.stdout, result.stderr)
    assert "Usage:" in result.stderr or "Error" in result.stderr
    assert served.requests == []


# --- organizations and clusters


def test_orgs_and_clusters_are_tables_and_their_json_is_the_apis(hv, auth, fleet, client):
    organization, admin = auth.org("research")
    cluster = fleet.cluster(organization, name="a100-pool", cpu=64, ram_gb=512, gpu=8)
    other_organization, _ = auth.org("elsewhere")
    viewer_of_other = auth.member("viewer", other_organization)
    fleet.cluster(other_organization, name="t4-pool")
    fleet.start(fleet.deployment(cluster, admin, cpu=8, ram_gb=64, gpu=2))
    fleet.deployment(cluster, admin, gpu=8)
    hv.login(admin)

    orgs = hv("orgs")
    assert orgs.code == 0
    assert [str(organization.id), "research", "admin"] in table_rows(orgs.stdout)
    assert hv("orgs", "--json").json() == api_json(client, admin, "/organizations")

    clusters = hv("clusters")
    assert clusters.code == 0
    row = next(row for row in table_rows(clusters.stdout) if row[0] == str(cluster.id))
    assert row == [str(cluster.id), "a100-pool", "simulated", "8/64", "64/512", "2/8", "1", "1"]
    assert "t4-pool" not in clusters.stdout
    assert hv("--json", "clusters").json() == api_json(client, admin, f"/organizations/{organization.id}/clusters")
    assert hv("clusters", "--org", str(organization.id), "--json").json() == api_json(
        client, admin, f"/organizations/{organization.id}/clusters"
    )
    hv("logout")
    hv.login(viewer_of_other)
    refused = hv("clusters", "--org", str(organization.id))
    assert refused.code == 1
    assert api_status_message(client, viewer_of_other, f"/organizations/{organization.id}/clusters") in refused.stderr


def api_status_message(client, identity, path):
    response = client.get(f"/api/v1{path}", headers=identity.headers)
    assert response.status_code >= 400
    return response.json["message"]


# --- submitting and reading deployments


def test_submit_splits_the_command_and_sends_env_and_options(hv, auth, fleet, client):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    dependency = fleet.deployment(cluster, admin)
    hv.login(admin)
    result = hv(
        "submit", "--cluster", str(cluster.id), "--name", "bert", "--image", "ghcr.io/research/bert:2.1",
        "--cpu", "0.5", "--ram-gb", "1.5", "--gpu", "1", "--priority", "700", "--depends-on", str(dependency.id),
        "--max-retries", "1", "--run-seconds", "20", "--grace-seconds", "5",
        "--command", "python train.py --note 'two words' --lr=1e-3",
        "--env", "LR=0.001", "--env", "EXTRA=a=b", "--json",
    )  # fmt: skip
    deployment = result.json()
    assert deployment["status"] == "queued"
    assert deployment["command"] == ["python", "train.py", "--note", "two words", "--lr=1e-3"]
    assert deployment["env"] == {"LR": "0.001", "EXTRA": "a=b"}
    assert deployment["resources"] == {"cpu": 0.5, "ram_gb": 1.5, "gpu": 1}
    assert (deployment["priority"], deployment["max_retries"], deployment["run_seconds"]) == (700, 1, 20)
    assert deployment["depends_on"] == [str(dependency.id)] and deployment["grace_seconds"] == 5
    assert deployment == api_json(client, admin, f"/deployments/{deployment['id']}")

    human = hv("submit", "--cluster", str(cluster.id), "--name", "plain", "--image", "busybox:1", "--cpu", "1",
               "--ram-gb", "1", "--gpu", "0")  # fmt: skip
    assert human.code == 0
    assert "plain" in human.stdout and "queued" in human.stdout


def test_a_refused_submit_exits_1_with_the_apis_message_and_each_bad_field(hv, auth, fleet, client):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization, gpu=4)
    hv.login(admin)
    too_big = hv("submit", "--cluster", str(cluster.id), "--name", "huge", "--image", "busybox:1", "--cpu", "1",
                 "--ram-gb", "1", "--gpu", "9")  # fmt: skip
    assert too_big.code == 1
    answer = client.post(
        f"/api/v1/clusters/{cluster.id}/deployments",
        json={"name": "huge", "image": "busybox:1", "cpu": 1, "ram_gb": 1, "gpu": 9},
        headers=admin.headers,
    )
    assert answer.status_code == 422
    assert answer.json["message"] in too_big.stderr
    for messages in answer.json.get("errors", {}).get("json", {}).values():
        assert " ".join(messages) in too_big.stderr

    bad_priority = hv("submit", "--cluster", str(cluster.id), "--name", "n", "--image", "busybox:1", "--cpu", "1",
                      "--ram-gb", "1", "--gpu", "0", "--priority", "5000")  # fmt: skip
    assert bad_priority.code == 1
    assert "priority:" in bad_priority.stderr
    assert "Traceback" not in bad_priority.stderr


def test_a_viewer_is_refused_with_the_apis_message(hv, auth, fleet, client):
    organization, _ = auth.org()
    cluster = fleet.cluster(organization)
    viewer = auth.member("viewer", organization)
    hv.login(viewer)
    result = hv("submit", "--cluster", str(cluster.id), "--name", "n", "--image", "busybox:1", "--cpu", "1",
                "--ram-gb", "1", "--gpu", "0")  # fmt: skip
    assert result.code == 1
    answer = client.post(
        f"/api/v1/clusters/{cluster.id}/deployments",
        json={"name": "n", "image": "busybox:1", "cpu": 1, "ram_gb": 1, "gpu": 0},
        headers=viewer.headers,
    )
    assert answer.status_code == 403
    assert answer.json["message"] in result.stderr


def test_ls_shows_the_queue_in_scheduling_order_with_positions_and_reasons(hv, auth, fleet, client):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization, gpu=4)
    running = fleet.start(fleet.deployment(cluster, admin, name="running-one", gpu=4))
    low = fleet.deployment(cluster, admin, name="low", priority=100, gpu=1)
    high = fleet.deployment(cluster, admin, name="high", priority=900, gpu=1)
    hv.login(admin)

    listed = api_json(client, admin, f"/clusters/{cluster.id}/deployments")
    result = hv("ls", "--cluster", str(cluster.id))
    assert result.code == 0
    rows = table_rows(result.stdout)
    assert [row[1] for row in rows] == [deployment["name"] for deployment in listed]
    assert [row[1] for row in rows if row[2] == "queued"] == ["high", "low"]
    for row, deployment in zip(rows, listed, strict=True):
        position = deployment.get("position")
        if position is not None:
            assert row[3] == str(position)
        if deployment["reason"]:
            assert deployment["reason"][:40] in result.stdout
    assert hv("ls", "--cluster", str(cluster.id), "--json").json() == listed

    queued = hv("ls", "--cluster", str(cluster.id), "--status", "queued", "--json").json()
    assert [deployment["id"] for deployment in queued] == [str(high.id), str(low.id)]
    assert str(running.id) not in hv("ls", "--cluster", str(cluster.id), "--status", "queued").stdout


def test_show_events_and_logs_of_one_deployment(hv, auth, fleet, client, session):
    from shared.deployments.models import DeploymentLog

    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    deployment = fleet.start(fleet.deployment(cluster, admin, name="bert-finetune", command=["python", "train.py"]))
    session.add(
        DeploymentLog(
            deployment_id=deployment.id, generation=deployment.generation, logs="epoch 1\nepoch 2\n", truncated=False
        )
    )
    session.commit()
    hv.login(admin)

    shown = hv("show", str(deployment.id))
    assert shown.code == 0
    assert "bert-finetune" in shown.stdout and "running" in shown.stdout and "python train.py" in shown.stdout
    assert hv("show", str(deployment.id), "--json").json() == api_json(client, admin, f"/deployments/{deployment.id}")

    history = api_json(client, admin, f"/deployments/{deployment.id}/events")
    events = hv("events", str(deployment.id))
    assert events.code == 0
    assert [row[1] for row in table_rows(events.stdout)] == [event["type"] for event in history]
    assert hv("events", str(deployment.id), "--json").json() == history

    logs = hv("logs", str(deployment.id))
    assert logs.code == 0
    assert logs.stdout == "epoch 1\nepoch 2\n"
    assert f"generation {deployment.generation}" in logs.stderr
    assert hv("logs", str(deployment.id), "--json").json() == api_json(
        client, admin, f"/deployments/{deployment.id}/logs"
    )

    missing = hv("show", "00000000-0000-0000-0000-000000000000")
    assert missing.code == 1
    assert api_status_message(client, admin, "/deployments/00000000-0000-0000-0000-000000000000") in missing.stderr


def test_cancel_complete_and_fail(hv, auth, fleet, client):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    queued = fleet.deployment(cluster, admin, name="to-cancel")
    finishing = fleet.start(fleet.deployment(cluster, admin, name="to-complete"))
    failing = fleet.start(fleet.deployment(cluster, admin, name="to-fail", max_retries=0))
    hv.login(admin)

    cancelled = hv("cancel", str(queued.id))
    assert cancelled.code == 0 and "cancelled" in cancelled.stdout
    assert hv("complete", str(finishing.id), "--json").json()["status"] == "completed"
    failed = hv("fail", str(failing.id), "--reason", "CUDA out of memory", "--json").json()
    assert failed["status"] == "failed" and "CUDA out of memory" in failed["reason"]

    again = hv("cancel", str(queued.id))
    assert again.code == 1
    answer = client.post(f"/api/v1/deployments/{queued.id}/cancel", headers=admin.headers)
    assert answer.status_code == 409
    assert answer.json["message"] in again.stderr


def test_agent_tokens_are_created_listed_and_revoked(hv, auth, fleet, client):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization, runtime="agent")
    hv.login(admin)

    created = hv("agent-token", "create", "--cluster", str(cluster.id), "--name", "host-1")
    assert created.code == 0
    token = next(word for word in created.stdout.split() if word.startswith("hva_"))
    assert client.post("/api/v1/agent/sync", json={"agent": {"name": "h", "driver": "process", "version": "1"},
                       "deployments": []}, headers={"Authorization": f"Bearer {token}"}).status_code == 200  # fmt: skip
    listed = hv("agent-token", "ls", "--cluster", str(cluster.id), "--json").json()
    assert listed == api_json(client, admin, f"/clusters/{cluster.id}/agent-tokens")
    assert [item["name"] for item in listed] == ["host-1"]
    assert "host-1" in hv("agent-token", "ls", "--cluster", str(cluster.id)).stdout

    revoked = hv("agent-token", "revoke", "--cluster", str(cluster.id), listed[0]["id"])
    assert revoked.code == 0
    assert hv("agent-token", "ls", "--cluster", str(cluster.id), "--json").json() == []
    again = hv("agent-token", "revoke", "--cluster", str(cluster.id), listed[0]["id"])
    assert again.code == 1 and "Error" in again.stderr
    assert (
        hv("agent-token", "create", "--cluster", str(cluster.id), "--name", "x", "--json")
        .json()["token"]
        .startswith("hva_")
    )


# --- the views of API.md's "Additions": the contract's path, and --json is the API's answer


@pytest.mark.parametrize(
    "arguments, method, path",
    [
        (["events", "--cluster", "{cluster}"], "GET", "/api/v1/clusters/{cluster}/events"),
        (["events", "--org", "{org}"], "GET", "/api/v1/organizations/{org}/events"),
    ],
    ids=["events --cluster", "events --org"],
)
def test_history_commands_print_what_the_api_answers(hv, client, auth, fleet, served, arguments, method, path):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization)
    resized = client.patch(f"/api/v1/clusters/{cluster.id}", json={"cpu": 16}, headers=admin.headers)
    assert resized.status_code == 200
    hv.login(admin)
    ids = {"cluster": str(cluster.id), "org": str(organization.id)}
    served.requests.clear()
    result = hv(*(argument.format(**ids) for argument in arguments), "--json")
    assert f"{method} {path.format(**ids)}" in served.requests
    expected = client.get(path.format(**ids), headers=admin.headers).json
    assert expected and result.json() == expected
    table = hv(*(argument.format(**ids) for argument in arguments))
    assert table.code == 0 and expected[0]["type"] in table.stdout


def test_dry_run_and_the_organizations_list_print_what_the_api_answers(hv, client, auth, fleet, served):
    organization, admin = auth.org()
    cluster = fleet.cluster(organization, cpu=4, ram_gb=8, gpu=0)
    fleet.start(fleet.deployment(cluster, admin, name="low", cpu=4, ram_gb=1, priority=100))
    hv.login(admin)
    served.requests.clear()
    options = ["--cluster", str(cluster.id), "--name", "urgent", "--image", "x:1", "--cpu", "2", "--ram-gb", "1"]
    options += ["--gpu", "0", "--priority", "900"]
    planned = hv("dry-run", *options, "--json")
    assert f"POST /api/v1/clusters/{cluster.id}/deployments/dry-run" in served.requests
    assert planned.json()["outcome"] == "preempt" and [v["name"] for v in planned.json()["victims"]] == ["low"]
    table = hv("dry-run", *options)
    assert table.code == 0 and "preempt" in table.stdout and "low" in table.stdout

    listed = hv("ls", "--org", str(organization.id), "--json")
    assert f"GET /api/v1/organizations/{organization.id}/deployments" in " ".join(served.requests)
    expected = client.get(f"/api/v1/organizations/{organization.id}/deployments", headers=admin.headers).json
    assert [d["id"] for d in listed.json()] == [d["id"] for d in expected] and len(expected) == 1


# --- output


def test_colour_only_on_a_terminal(hv, auth):
    hv.login(auth.org("research")[1])
    piped = hv("orgs")
    assert "\x1b[" not in piped.stdout

    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            hv.command("orgs"), cwd=ROOT, env=hv.env, stdin=terminal, stdout=terminal, stderr=terminal
        )
        os.close(terminal)
        printed = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal closed
                break
            if not chunk:
                break
            printed += chunk
        assert process.wait(30) == 0
    finally:
        os.close(controller)
    assert b"research" in printed
    assert b"\x1b[" in printed
