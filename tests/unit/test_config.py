"""Settings come from the environment and refuse to start an unsafe production."""

import secrets

import pytest

from shared import config
from shared.config import ConfigError, Settings, sqlalchemy_url

URLS = {"DATABASE_URL": "postgresql://db/hv", "REDIS_URL": "redis://cache:6379/0"}
PRODUCTION = {**URLS, "HV_ENV": "production", "SECRET_KEY": "Vq3x9-Lk2bTz7RwY0pHs4NcE8uJm1aGd6fQi5oWe"}


def test_production_refuses_a_missing_secret_key():
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env({**URLS, "HV_ENV": "production"})


def test_production_refuses_a_weak_secret_key():
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Settings.from_env({**URLS, "HV_ENV": "production", "SECRET_KEY": "x" * 31})


@pytest.mark.parametrize("generate", [lambda: secrets.token_urlsafe(24), lambda: secrets.token_hex(16)])
def test_production_accepts_random_32_character_keys(generate):
    for _ in range(20):
        key = generate()
        settings = Settings.from_env({**PRODUCTION, "SECRET_KEY": key})
        assert settings.production and settings.secret_key == key


@pytest.mark.parametrize("key", ["k" * 32, "ab" * 20, "0123456789abcdef" * 2, "password" * 5, "qwertyuiop" * 4])
@pytest.mark.parametrize("name", ["SECRET_KEY", "SECRET_KEY_PREVIOUS"])
def test_production_refuses_a_long_but_guessable_key(name, key):
    with pytest.raises(ConfigError, match=f"{name} is too easy to guess"):
        Settings.from_env({**PRODUCTION, name: key})


def test_production_refuses_to_run_without_rate_limits():
    for off in ("false", "0", "no"):
        with pytest.raises(ConfigError, match="RATELIMIT_ENABLED=false is refused in production"):
            Settings.from_env({**PRODUCTION, "RATELIMIT_ENABLED": off})
    assert Settings.from_env({**URLS, "SECRET_KEY": "k" * 40, "RATELIMIT_ENABLED": "false"}).ratelimit_enabled is False


@pytest.mark.parametrize("name", ["ACCESS_TOKEN_MINUTES", "REFRESH_TOKEN_DAYS"])
@pytest.mark.parametrize("value", ["0", "-5"])
@pytest.mark.parametrize("mode", ["production", "development"])
def test_token_lifetimes_must_be_positive(name, value, mode):
    with pytest.raises(ConfigError, match=f"{name} must be a positive number, got {value}"):
        Settings.from_env({**PRODUCTION, "HV_ENV": mode, name: value})


def test_production_needs_both_server_urls():
    with pytest.raises(ConfigError, match="DATABASE_URL and REDIS_URL"):
        Settings.from_env({"HV_ENV": "production", "SECRET_KEY": "k" * 40, "REDIS_URL": "redis://x"})


def test_development_generates_a_secret_key_once_and_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "STATE_DIR", tmp_path)
    first = Settings.from_env(URLS).secret_key
    second = Settings.from_env(URLS).secret_key
    assert first == second and len(first.encode()) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # readable by its owner only


def test_development_without_servers_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SERVICES_FILE", tmp_path / "services.json")
    with pytest.raises(ConfigError, match="make services"):
        Settings.from_env({"SECRET_KEY": "k" * 40})


def test_development_uses_published_embedded_services(tmp_path, monkeypatch):
    published = tmp_path / "services.json"
    published.write_text('{"database_url": "postgresql://postgres@/hv?host=/s", "redis_url": "redis://127.0.0.1:1/0"}')
    monkeypatch.setattr(config, "SERVICES_FILE", published)
    settings = Settings.from_env({"SECRET_KEY": "k" * 40})
    assert settings.database_url == "postgresql+psycopg2://postgres@/hv?host=/s"
    assert settings.redis_url == "redis://127.0.0.1:1/0"


def test_unknown_environment_is_refused():
    with pytest.raises(ConfigError, match="HV_ENV"):
        Settings.from_env({**URLS, "HV_ENV": "staging"})


def test_non_integer_port_is_refused():
    with pytest.raises(ConfigError, match="API_PORT"):
        Settings.from_env({**URLS, "SECRET_KEY": "k" * 40, "API_PORT": "eighty"})


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgresql://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
    ],
)
def test_database_urls_are_pinned_to_psycopg2(given, expected):
    assert sqlalchemy_url(given) == expected


def test_registration_is_scarce_except_on_a_development_stack():
    production = Settings.from_env(PRODUCTION)
    test = Settings.from_env({**URLS, "HV_ENV": "test", "SECRET_KEY": "k" * 40})
    development = Settings.from_env({**URLS, "SECRET_KEY": "k" * 40})
    assert production.register_limit == test.register_limit == "30/hour"
    assert development.register_limit == "300/minute"
    assert production.register_taken_limit == test.register_taken_limit == development.register_taken_limit == "5/hour"
    assert Settings.from_env({**URLS, "SECRET_KEY": "k" * 40, "REGISTER_LIMIT": "5/day"}).register_limit == "5/day"
