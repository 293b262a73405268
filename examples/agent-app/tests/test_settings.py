from pathlib import Path

import pytest

from agent_app.settings import SettingsError, load_settings, read_secret, redact_url

BASE = {"DATABASE_URL": "postgresql://u:p@db:5432/agent", "REDIS_URL": "redis://cache:6379/0"}


def test_defaults() -> None:
    settings = load_settings(BASE)
    assert settings.llm_provider == "fake"
    assert settings.cache_ttl_seconds == 300
    assert settings.stream_token_delay_seconds == 0.05
    assert settings.shutdown_grace_seconds == 20
    assert settings.log_level == "INFO"
    assert settings.beat_schedule_file.startswith("/tmp/")


def test_file_form_wins_and_is_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("  from-file\n")
    env = {**BASE, "APP_SECRET_KEY": "from-env", "APP_SECRET_KEY_FILE": str(secret)}
    assert load_settings(env).app_secret_key == "from-file"
    assert load_settings({**BASE, "APP_SECRET_KEY": "from-env"}).app_secret_key == "from-env"


@pytest.mark.parametrize(
    "name", ["DATABASE_URL", "DATABASE_PASSWORD", "APP_SECRET_KEY", "LLM_API_KEY", "REDIS_PASSWORD"]
)
def test_every_secret_has_a_file_form(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("value-from-file\n")
    assert read_secret(name, {name: "env", f"{name}_FILE": str(path)}) == "value-from-file"


def test_unreadable_secret_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="APP_SECRET_KEY_FILE"):
        load_settings({**BASE, "APP_SECRET_KEY_FILE": str(tmp_path / "missing")})


def test_database_url_file(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_text("postgresql://file:secret@db/agent\n")
    settings = load_settings({**BASE, "DATABASE_URL_FILE": str(path)})
    assert settings.database_url == "postgresql://file:secret@db/agent"


def test_database_url_from_parts_with_password_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("p@ss/w:rd\n")
    env = {
        "DATABASE_HOST": "postgres",
        "DATABASE_PORT": "5433",
        "DATABASE_NAME": "agentdb",
        "DATABASE_USER": "agent",
        "DATABASE_PASSWORD": "ignored",
        "DATABASE_PASSWORD_FILE": str(path),
    }
    assert load_settings(env).database_url == "postgresql://agent:p%40ss%2Fw%3Ard@postgres:5433/agentdb"


def test_database_settings_required() -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        load_settings({"REDIS_URL": "redis://x"})


def test_redis_password_is_injected(tmp_path: Path) -> None:
    path = tmp_path / "redis"
    path.write_text("s3cret\n")
    settings = load_settings({**BASE, "REDIS_URL": "redis://cache:6380/2", "REDIS_PASSWORD_FILE": str(path)})
    assert settings.redis_url == "redis://:s3cret@cache:6380/2"


def test_openai_provider_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="LLM_API_KEY"):
        load_settings({**BASE, "LLM_PROVIDER": "openai"})
    key = tmp_path / "llm"
    key.write_text("sk-test\n")
    settings = load_settings({**BASE, "LLM_PROVIDER": "openai", "LLM_API_KEY_FILE": str(key)})
    assert settings.llm_api_key == "sk-test"
    assert settings.llm_model == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CACHE_TTL_SECONDS", "soon"),
        ("STREAM_TOKEN_DELAY_SECONDS", "-1"),
        ("LOG_LEVEL", "LOUD"),
        ("LLM_PROVIDER", "x"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({**BASE, name: value})


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    settings = load_settings({**BASE, "APP_SECRET_KEY": "topsecret", "LLM_API_KEY": "sk-abc"})
    text = repr(settings)
    assert "topsecret" not in text and "sk-abc" not in text and ":p@" not in text


def test_redact_url() -> None:
    assert redact_url("postgresql://u:pw@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"
