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
