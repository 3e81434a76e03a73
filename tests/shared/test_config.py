"""Configuration: read once, validated, one clear line per bad variable, environment over .env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import ConfigError, Settings, load_settings

from tests.conftest import BASE_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "DEVICE_TOKEN_SECRET", "ENCRYPTION_KEY")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env.update(extra)
    return env


def test_missing_secret_stops_with_one_line_naming_it(monkeypatch):
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    values = {k: BASE_SETTINGS[k] for k in SECRETS if k != "DEVICE_TOKEN_SECRET"}
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, **values)
    assert str(caught.value) == "configuration error: DEVICE_TOKEN_SECRET is not set"


def test_short_secret_is_named_without_echoing_it(monkeypatch):
    values = {k: BASE_SETTINGS[k] for k in SECRETS}
    values["JWT_ACCESS_SECRET"] = "short-secret-value"
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, **values)
    message = str(caught.value)
    assert message.count("\n") == 0
    assert "JWT_ACCESS_SECRET" in message and "too short" in message
    assert "short-secret-value" not in message


def test_process_environment_overrides_the_env_file(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    lines = [f"{k}={BASE_SETTINGS[k]}" for k in SECRETS] + ["PORT=4000", "TOTP_ISSUER=From file"]
    env_file.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("PORT", "4555")
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.PORT == 4555
    assert settings.TOTP_ISSUER == "From file"


def test_list_settings_are_comma_separated(monkeypatch):
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("WEBHOOK_RETRY_DELAYS", "1,5,30")
    settings = Settings(_env_file=None, **{k: BASE_SETTINGS[k] for k in SECRETS})  # type: ignore[call-arg]
    assert settings.CORS_ORIGINS == ["https://a.example", "https://b.example"]
    assert settings.WEBHOOK_RETRY_DELAYS == [1, 5, 30]


@pytest.mark.parametrize("module", ["api", "notifier", "webhook_dispatcher", "audit"])
def test_each_service_refuses_to_start_without_its_secrets(module, tmp_path):
    """Started from a directory without `.env`, every service exits with one line per secret."""
    result = subprocess.run(
        [sys.executable, "-m", module], cwd=tmp_path, env=clean_env(), capture_output=True,
        text=True, timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [f"configuration error: {name} is not set" for name in SECRETS]
