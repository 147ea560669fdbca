"""Settings: the environment, read once into a typed object.

Every knob of the system is read here and nowhere else; the README's configuration table lists them.
Without DATABASE_URL / REDIS_URL, the URLs of the embedded dev services (see devtools/services.py)
are read from the state folder they publish to.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Local, git-ignored state: embedded servers' data, the dev secret key, beat's schedule file.
STATE_DIR = Path(os.environ.get("HV_STATE_DIR", PROJECT_ROOT / ".hypervisor"))
SERVICES_FILE = STATE_DIR / "services.json"

MIN_SECRET_KEY_BYTES = 32
# zxcvbn's estimate of the guesses a key needs, as a power of ten: a random 32-character key scores
# about 29-32, a repeated letter, a keyboard walk or a few words far below.
MIN_SECRET_KEY_GUESSES_LOG10 = 24
ENVIRONMENTS = ("development", "production", "test")


class ConfigError(RuntimeError):
    """The environment does not describe a system that can start."""


def _int(env: dict, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _positive_int(env: dict, name: str, default: int) -> int:
    value = _int(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value}")
    return value


def _refuse_a_guessable_key(name: str, key: str) -> None:
    """Raise ConfigError if `key` is long enough but predictable (a repeated letter, a sequence, words)."""
    from zxcvbn import zxcvbn  # loads its dictionaries (~70 ms): only production needs it here

    # zxcvbn reads at most 72 characters; a key whose first 72 are unguessable is unguessable.
    if zxcvbn(key[:72])["guesses_log10"] < MIN_SECRET_KEY_GUESSES_LOG10:
        raise ConfigError(
            f"{name} is too easy to guess (repeated characters, sequences or words); use a random one "
            '(python -c "import secrets; print(secrets.token_urlsafe(48))")'
        )


def embedded_services() -> dict:
    """URLs published by a running dev-services process, or {} when none has published any."""
    try:
        return json.loads(SERVICES_FILE.read_text())
    except (OSError, ValueError):
        return {}


def _dev_secret_key() -> str:
    """A random key generated once per checkout and kept, so tokens survive a restart in development."""
    path = STATE_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except OSError:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key


def sqlalchemy_url(database_url: str) -> str:
    """Pin the psycopg2 driver: SQLAlchemy 2.1 would otherwise pick psycopg 3 for `postgresql://`."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg2://" + database_url[len(prefix) :]
    return database_url


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with its documented default."""

    env: str
    database_url: str
    redis_url: str
    secret_key: str = field(repr=False)
    previous_secret_key: str = field(default="", repr=False)
    log_level: str = "INFO"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    flower_port: int = 5555
    jwt_issuer: str = "hypervisor"
    jwt_audience: str = "hypervisor-api"
    access_token_minutes: int = 15
    refresh_token_days: int = 30
    session_max_days: int = 30
    login_limits: str = "5/minute;20/hour"
    login_address_limit: str = "30/minute"
    register_limit: str = "30/hour"
    register_taken_limit: str = "5/hour"
    join_limit: str = "10/minute"
    join_address_limit: str = "60/minute"
    refresh_limit: str = "60/minute"
    ratelimit_enabled: bool = True
    reconcile_seconds: int = 5
    reconcile_max_passes: int = 200
    pass_lock_seconds: int = 15
    max_organizations_per_user: int = 20
    max_clusters_per_organization: int = 100
    max_queued_per_cluster: int = 50_000
    max_queued_per_organization: int = 100_000
    max_dependencies_per_deployment: int = 100
    agent_sync_seconds: int = 2
    agent_lease_seconds: int = 30
    agent_lost_seconds: int = 300
    metrics_token: str = field(default="", repr=False)
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9101

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: dict | None = None) -> Settings:
        """Read and check the environment; raise ConfigError with a readable message if it is unusable."""
        env = dict(os.environ if environ is None else environ)
        mode = env.get("HV_ENV", "development")
        if mode not in ENVIRONMENTS:
            raise ConfigError(f"HV_ENV must be one of {', '.join(ENVIRONMENTS)}, got {mode!r}")

        database_url = env.get("DATABASE_URL") or ""
        redis_url = env.get("REDIS_URL") or ""
        if not (database_url and redis_url):
            if mode == "production":
                raise ConfigError("production needs DATABASE_URL and REDIS_URL")
            embedded = embedded_services()
            database_url = database_url or embedded.get("database_url", "")
            redis_url = redis_url or embedded.get("redis_url", "")
        if not (database_url and redis_url):
            raise ConfigError(
                "no DATABASE_URL / REDIS_URL and no embedded dev services running: "
                "start them with `make services` (or `make up`), or set both variables"
            )

        secret_key = env.get("SECRET_KEY", "")
        if mode == "production":
            if len(secret_key.encode()) < MIN_SECRET_KEY_BYTES:
                raise ConfigError(
                    f"SECRET_KEY must be set to at least {MIN_SECRET_KEY_BYTES} bytes in production "
                    '(python -c "import secrets; print(secrets.token_urlsafe(48))")'
                )
            _refuse_a_guessable_key("SECRET_KEY", secret_key)
        elif not secret_key:
            secret_key = _dev_secret_key()
        elif len(secret_key.encode()) < MIN_SECRET_KEY_BYTES:
            raise ConfigError(f"SECRET_KEY is shorter than {MIN_SECRET_KEY_BYTES} bytes")

        previous_secret_key = env.get("SECRET_KEY_PREVIOUS", "")
        if previous_secret_key and len(previous_secret_key.encode()) < MIN_SECRET_KEY_BYTES:
            raise ConfigError(f"SECRET_KEY_PREVIOUS is shorter than {MIN_SECRET_KEY_BYTES} bytes")
        if previous_secret_key and mode == "production":
            _refuse_a_guessable_key("SECRET_KEY_PREVIOUS", previous_secret_key)

        ratelimit_enabled = env.get("RATELIMIT_ENABLED", "true").lower() not in ("0", "false", "no")
        if mode == "production" and not ratelimit_enabled:
            raise ConfigError(
                "RATELIMIT_ENABLED=false is refused in production: the limits are what stop password guessing"
            )

        return cls(
            env=mode,
            database_url=sqlalchemy_url(database_url),
            redis_url=redis_url,
            secret_key=secret_key,
            previous_secret_key=previous_secret_key,
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            api_host=env.get("API_HOST", "127.0.0.1"),
            api_port=_int(env, "API_PORT", 8000),
            flower_port=_int(env, "FLOWER_PORT", 5555),
            access_token_minutes=_positive_int(env, "ACCESS_TOKEN_MINUTES", 15),
            refresh_token_days=_positive_int(env, "REFRESH_TOKEN_DAYS", 30),
            session_max_days=_positive_int(env, "SESSION_MAX_DAYS", 30),
            login_limits=env.get("LOGIN_LIMITS", "5/minute;20/hour"),
            login_address_limit=env.get("LOGIN_ADDRESS_LIMIT", "30/minute"),
            # Account creation is scarce, except on a development stack: acceptance checks drive it over
            # HTTP from one loopback address, a user per check. The test suite flushes Redis per test.
            register_limit=env.get("REGISTER_LIMIT", "300/minute" if mode == "development" else "30/hour"),
            register_taken_limit=env.get("REGISTER_TAKEN_LIMIT", "5/hour"),
            join_limit=env.get("JOIN_LIMIT", "10/minute"),
            join_address_limit=env.get("JOIN_ADDRESS_LIMIT", "60/minute"),
            refresh_limit=env.get("REFRESH_LIMIT", "60/minute"),
            ratelimit_enabled=ratelimit_enabled,
            reconcile_seconds=_int(env, "RECONCILE_SECONDS", 5),
            reconcile_max_passes=_int(env, "RECONCILE_MAX_PASSES", 200),
            pass_lock_seconds=_int(env, "PASS_LOCK_SECONDS", 15),
            max_organizations_per_user=_int(env, "MAX_ORGANIZATIONS_PER_USER", 20),
            max_clusters_per_organization=_int(env, "MAX_CLUSTERS_PER_ORGANIZATION", 100),
            max_queued_per_cluster=_int(env, "MAX_QUEUED_PER_CLUSTER", 50_000),
            max_queued_per_organization=_int(env, "MAX_QUEUED_PER_ORGANIZATION", 100_000),
            max_dependencies_per_deployment=_int(env, "MAX_DEPENDENCIES_PER_DEPLOYMENT", 100),
            agent_sync_seconds=_positive_int(env, "AGENT_SYNC_SECONDS", 2),
            agent_lease_seconds=_positive_int(env, "AGENT_LEASE_SECONDS", 30),
            agent_lost_seconds=_positive_int(env, "AGENT_LOST_SECONDS", 300),
            metrics_token=env.get("METRICS_TOKEN", ""),
            worker_metrics_host=env.get("WORKER_METRICS_HOST", "127.0.0.1"),
            worker_metrics_port=_int(env, "WORKER_METRICS_PORT", 9101),
        )


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings
