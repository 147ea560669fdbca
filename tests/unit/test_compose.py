"""docker-compose.yml describes the production-like stack the README promises (no engine runs here)."""

import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_every_part_of_the_stack_is_there_with_a_healthcheck():
    assert {"postgres", "redis", "api", "worker", "beat", "flower"} <= set(SERVICES)
    for name in ("postgres", "redis", "api", "worker", "flower"):
        assert "healthcheck" in SERVICES[name], name


def test_redis_persists_and_never_evicts():
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command


def test_exactly_one_beat():
    assert SERVICES["beat"]["deploy"]["replicas"] == 1
    assert "replicas" not in SERVICES["worker"].get("deploy", {})  # workers scale freely


def test_no_default_secrets():
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in ("SECRET_KEY", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"):
        assert f"${{{variable}:?" in text, f"{variable} must be required, not defaulted"
    assert SERVICES["api"]["environment"]["HV_ENV"] == "production"


def test_the_api_is_published_on_loopback_only_behind_a_tls_proxy():
    # Plain HTTP: TLS terminates in a reverse proxy in front, so the API is not published on every interface.
    assert SERVICES["api"]["ports"] == ["127.0.0.1:8000:8000"]
    assert all(port.startswith("127.0.0.1:") for service in SERVICES.values() for port in service.get("ports", []))


def test_gunicorn_runs_with_the_project_config():
    # gunicorn.conf.py: JSON errors from gunicorn itself, no per-user control socket shared between stacks.
    assert "--config gunicorn.conf.py" in " ".join(SERVICES["api"]["command"])
    assert '"--config", "gunicorn.conf.py"' in (ROOT / "Dockerfile").read_text()


def test_the_api_and_the_workers_share_figures_through_a_directory_empty_at_each_start():
    # shared/metrics.py: several processes per container; a tmpfs starts empty, so no dead process's counts linger.
    for name in ("api", "worker"):
        directory = SERVICES[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        assert directory in SERVICES[name]["tmpfs"], name


def test_the_docker_agent_is_an_opt_in_service_with_the_engine_socket_and_no_default_token():
    agent = SERVICES["agent"]
    assert agent["profiles"] == ["agent"]  # `docker compose up` does not start it
    assert "--driver" in agent["command"] and "docker" in agent["command"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in agent["volumes"]
    assert agent["environment"]["HV_AGENT_TOKEN"] == "${HV_AGENT_TOKEN:-}"
    assert "root on the host" in (ROOT / "docker-compose.yml").read_text()
