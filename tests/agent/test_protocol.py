"""Parsing the server's sync answer: what the agent relies on is checked, and a wrong field is named."""

from __future__ import annotations

import pytest

from agent.protocol import AgentInfo, ProtocolError, Report, Resources, parse_sync_response, sync_request

ANSWER = {
    "cluster_id": "c-1",
    "sync_seconds": 2,
    "lease_seconds": 30,
    "fence_seconds": 240,
    "run": [
        {
            "id": "d-1",
            "generation": 3,
            "state": "pending",
            "name": "train",
            "image": "busybox:1",
            "command": ["sleep", "5"],
            "env": {"A": "1"},
            "resources": {"cpu": 1.5, "ram_gb": 2, "gpu": 1},
            "grace_seconds": 10,
            "a_field_added_later": True,
        }
    ],
    "stop": [{"id": "d-2", "generation": 1, "grace_seconds": 30, "reason": "preempted"}],
}


def test_a_full_answer_is_parsed():
    response = parse_sync_response(ANSWER)
    assert (response.sync_seconds, response.lease_seconds, response.fence_seconds) == (2, 30, 240)
    run = response.run[0]
    assert (run.key, run.state, run.command, run.env, run.grace_seconds) == (
        ("d-1", 3),
        "pending",
        ["sleep", "5"],
        {"A": "1"},
        10,
    )
    assert run.resources == Resources(1.5, 2, 1)
    assert response.stop[0].key == ("d-2", 1)
    assert response.stop[0].reason == "preempted"


def test_a_null_command_means_the_images_default():
    answer = {**ANSWER, "run": [{**ANSWER["run"][0], "command": None, "env": None}]}
    run = parse_sync_response(answer).run[0]
    assert (run.command, run.env) == (None, {})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sync_seconds": 0}, "sync_seconds: expected a number > 0"),
        ({"fence_seconds": "soon"}, "fence_seconds: expected a number >= 0, got str 'soon'"),
        ({"run": {}}, "run: expected a list"),
        ({"run": [{**ANSWER["run"][0], "generation": "3"}]}, "run[0].generation: expected an integer"),
        ({"run": [{**ANSWER["run"][0], "state": "exited"}]}, "run[0].state: expected 'pending' or 'running'"),
        ({"run": [{**ANSWER["run"][0], "command": ["ok", 1]}]}, "run[0].command[1]: expected a string"),
        ({"stop": [{"generation": 1}]}, "stop[0].id: expected a string, got nothing"),
    ],
)
def test_a_wrong_field_is_named(change, message):
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_sync_response({**ANSWER, **change})


def test_an_answer_that_is_not_an_object_is_refused():
    with pytest.raises(ProtocolError, match="response: expected an object"):
        parse_sync_response([])


def test_the_request_carries_the_agent_and_its_reports():
    reports = [
        Report("d-1", 3, "running", "2030-01-01T00:00:00Z", container="f00d" * 16),
        Report("d-2", 1, "exited", "2030-01-01T00:00:01Z", exit_code=0, logs="done\n"),
    ]
    assert sync_request(AgentInfo("host-1", "process", "0.1.0"), reports) == {
        "agent": {"name": "host-1", "driver": "process", "version": "0.1.0"},
        "deployments": [
            {"id": "d-1", "generation": 3, "state": "running", "at": "2030-01-01T00:00:00Z", "container": "f00d" * 16},
            {
                "id": "d-2",
                "generation": 1,
                "state": "exited",
                "at": "2030-01-01T00:00:01Z",
                "exit_code": 0,
                "logs": "done\n",
            },
        ],
    }
