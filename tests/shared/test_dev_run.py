"""`make run`'s launcher: writes a fresh `.env`, and names each unreachable dependency."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import make_settings

SPEC = importlib.util.spec_from_file_location(
    "dev_run", Path(__file__).resolve().parents[2] / "deploy" / "dev_run.py"
)
assert SPEC and SPEC.loader
dev_run = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(dev_run)


def test_env_file_is_written_once_with_fresh_secrets(tmp_path):
    env = tmp_path / ".env"
    assert dev_run.ensure_env_file(env) is True
    first = env.read_text()
    values = dict(line.split("=", 1) for line in first.splitlines() if "=" in line and not line.startswith("#"))
    for name in dev_run.SECRET_VARIABLES:
        assert len(values[name]) >= 64
    assert len({values[n] for n in dev_run.SECRET_VARIABLES}) == 4  # all different
    assert values["PORT"] == "3001"
    assert env.stat().st_mode & 0o077 == 0  # readable by the owner only
    assert dev_run.ensure_env_file(env) is False
    assert env.read_text() == first


async def test_each_unreachable_dependency_gets_one_line_with_its_start_command():
    settings = make_settings(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/tfa",
        REDIS_PORT=1,
        RABBITMQ_URL="amqp://guest:guest@127.0.0.1:1/",
    )
    problems = await dev_run.check_dependencies(settings)
    assert len(problems) == 3
    assert problems[0].startswith("PostgreSQL is not reachable at 127.0.0.1:1/tfa")
    assert "pg_ctlcluster" in problems[0]
    assert problems[1].startswith("Redis is not reachable at 127.0.0.1:1") and "redis-server" in problems[1]
    assert problems[2].startswith("RabbitMQ is not reachable") and "rabbitmq-server -detached" in problems[2]


async def test_no_problems_when_everything_answers(settings):
    assert await dev_run.check_dependencies(settings) == []
