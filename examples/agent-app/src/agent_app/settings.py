"""Settings read from environment variables.

Every secret can also be given as ``<NAME>_FILE`` pointing at a file (for example a
Compose secret under ``/run/secrets``); the file form wins and its content is stripped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

SECRET_NAMES = ("DATABASE_URL", "DATABASE_PASSWORD", "APP_SECRET_KEY", "LLM_API_KEY", "REDIS_PASSWORD")
LLM_PROVIDERS = ("fake", "openai")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """Raised when the environment does not describe a usable configuration."""


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Secrets are excluded from ``repr`` so they never reach logs."""

    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    app_secret_key: str | None = field(default=None, repr=False)
    llm_provider: str = "fake"
    llm_base_url: str = "https://api.openai.com/v1"
    llm_model: str = "fake-planner-1"
    llm_api_key: str | None = field(default=None, repr=False)
    llm_timeout_seconds: float = 30.0
    log_level: str = "INFO"
    cache_ttl_seconds: int = 300
    stream_token_delay_seconds: float = 0.05
    shutdown_grace_seconds: int = 20
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    heartbeat_interval_seconds: float = 30.0
    beat_max_loop_interval_seconds: float = 30.0
    beat_max_tick_age_seconds: float = 120.0
    worker_concurrency: int = 2
    beat_schedule_file: str = "/tmp/agent-app-celerybeat-schedule"
    fake_llm_delay_seconds: float = 0.0
    fake_llm_fail_marker: str = ""
    worker_metrics_port: int = 0
    worker_metrics_address: str = "127.0.0.1"
    broker_visibility_timeout_seconds: float = 3600.0


def read_secret(name: str, env: Mapping[str, str]) -> str | None:
    """Return secret ``name`` from ``<name>_FILE`` (preferred) or ``<name>``, or None."""
    path = env.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc
    value = env.get(name)
    return value if value else None


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> float | int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a {kind.__name__}, got {raw!r}") from exc
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {raw!r}")
    return value


def build_database_url(env: Mapping[str, str]) -> str:
    """``DATABASE_URL`` if set, else a URL assembled from ``DATABASE_HOST/PORT/NAME/USER/PASSWORD``."""
    url = read_secret("DATABASE_URL", env)
    if url:
        return url
    host = env.get("DATABASE_HOST")
    if not host:
        raise SettingsError(
            "set DATABASE_URL (or DATABASE_URL_FILE) or DATABASE_HOST with DATABASE_NAME/USER"
        )
    user = env.get("DATABASE_USER", "agent")
    password = read_secret("DATABASE_PASSWORD", env)
    credentials = quote(user, safe="")
    if password:
        credentials += ":" + quote(password, safe="")
    port = env.get("DATABASE_PORT", "5432")
    name = quote(env.get("DATABASE_NAME", "agent"), safe="")
    return f"postgresql://{credentials}@{host}:{port}/{name}"


def build_redis_url(env: Mapping[str, str]) -> str:
    """``REDIS_URL`` with ``REDIS_PASSWORD(_FILE)`` injected when the URL carries no password."""
    url = env.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    password = read_secret("REDIS_PASSWORD", env)
    if not password:
        return url
    parts = urlsplit(url)
    if parts.password:
        return url
    user = quote(parts.username, safe="") if parts.username else ""
    netloc = f"{user}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (defaults to ``os.environ``)."""
    env = os.environ if env is None else env
    provider = env.get("LLM_PROVIDER", "fake").strip().lower()
    if provider not in LLM_PROVIDERS:
        raise SettingsError(f"LLM_PROVIDER must be one of {', '.join(LLM_PROVIDERS)}, got {provider!r}")
    default_model = "fake-planner-1" if provider == "fake" else "gpt-4o-mini"
    api_key = read_secret("LLM_API_KEY", env)
    if provider == "openai" and not api_key:
        raise SettingsError("LLM_PROVIDER=openai needs LLM_API_KEY or LLM_API_KEY_FILE")
    log_level = env.get("LOG_LEVEL", "INFO").strip().upper()
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    pool_min = int(_number(env, "DATABASE_POOL_MIN_SIZE", 1, int))
    pool_max = int(_number(env, "DATABASE_POOL_MAX_SIZE", 10, int))
    if pool_max < max(pool_min, 1):
        raise SettingsError("DATABASE_POOL_MAX_SIZE must be >= DATABASE_POOL_MIN_SIZE and >= 1")
    return Settings(
        database_url=build_database_url(env),
        redis_url=build_redis_url(env),
        app_secret_key=read_secret("APP_SECRET_KEY", env),
        llm_provider=provider,
        llm_base_url=env.get("LLM_BASE_URL", "https://api.openai.com/v1"),
        llm_model=env.get("LLM_MODEL") or default_model,
        llm_api_key=api_key,
        llm_timeout_seconds=float(_number(env, "LLM_TIMEOUT_SECONDS", 30.0, float)),
        log_level=log_level,
        cache_ttl_seconds=int(_number(env, "CACHE_TTL_SECONDS", 300, int)),
        stream_token_delay_seconds=float(_number(env, "STREAM_TOKEN_DELAY_SECONDS", 0.05, float)),
        shutdown_grace_seconds=int(_number(env, "SHUTDOWN_GRACE_SECONDS", 20, int)),
        db_pool_min_size=pool_min,
        db_pool_max_size=pool_max,
        heartbeat_interval_seconds=float(_number(env, "HEARTBEAT_INTERVAL_SECONDS", 30.0, float)),
        beat_max_loop_interval_seconds=float(_number(env, "BEAT_MAX_LOOP_INTERVAL_SECONDS", 30.0, float)),
        beat_max_tick_age_seconds=float(_number(env, "BEAT_MAX_TICK_AGE_SECONDS", 120.0, float)),
        worker_concurrency=int(_number(env, "WORKER_CONCURRENCY", 2, int)) or 1,
        beat_schedule_file=env.get("CELERY_BEAT_SCHEDULE_FILE", "/tmp/agent-app-celerybeat-schedule"),
        fake_llm_delay_seconds=float(_number(env, "FAKE_LLM_DELAY_SECONDS", 0.0, float)),
        fake_llm_fail_marker=env.get("FAKE_LLM_FAIL_MARKER", ""),
        worker_metrics_port=int(_number(env, "WORKER_METRICS_PORT", 0, int)),
        worker_metrics_address=env.get("WORKER_METRICS_ADDRESS", "127.0.0.1"),
        broker_visibility_timeout_seconds=float(
            _number(env, "BROKER_VISIBILITY_TIMEOUT_SECONDS", 3600.0, float)
        ),
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
