"""The README's reference parts say what the code does: the configuration table and
`.env.example` list exactly the settings of `shared/config.py` with their defaults, the API
overview lists exactly the routes the API serves, the dependency table every direct dependency,
and every local link points at something that exists."""

from __future__ import annotations

import re
import tomllib

from shared.config import Settings

from api.app import create_app

from tests.conftest import make_settings
from tests.docs import config_table
from tests.docs.readme import README, ROOT, section, table_rows

ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
# Read only by docker-compose.yml, not by the services.
COMPOSE_ONLY = {"POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"}
SECRETS = {"JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "DEVICE_TOKEN_SECRET", "ENCRYPTION_KEY"}
# Where .env.example deliberately shows another value than the default, and why.
EXAMPLE_VALUES = {"EMAIL_FROM": "the integration guide's example sender, noreply@yourapp.com"}


def env_example() -> dict[str, str | None]:
    """Each variable of `.env.example`, None when it is only mentioned in a comment (unset)."""
    values: dict[str, str | None] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if match := ENV_LINE.match(line.strip()):
            values[match.group(1)] = None if line.startswith("#") else match.group(2)
    return values


def test_configuration_table_lists_every_setting_with_its_default():
    """Regenerate with `python -m tests.docs.config_table --write` when this fails."""
    text = README.read_text()
    assert config_table.current_table(text) == config_table.expected_table(text)
    undescribed = [name for name, (_, what) in config_table.documented(text).items() if not what]
    assert undescribed == []


def test_env_example_lists_every_setting_and_nothing_else():
    names = set(env_example())
    assert set(Settings.model_fields) - names == set()
    assert names - set(Settings.model_fields) == COMPOSE_ONLY


def test_env_example_values_are_the_defaults():
    example = {n: v for n, v in env_example().items() if n in Settings.model_fields}
    secrets = {n: example[n] for n in SECRETS}
    assert secrets == dict.fromkeys(SECRETS, ""), "empty: make run generates them"
    given = {n: v for n, v in example.items() if v is not None and n not in SECRETS}
    given.update(dict.fromkeys(SECRETS, "x" * 32))
    parsed = Settings(_env_file=None, **given)  # type: ignore[arg-type]
    differing = [
        name for name, field in Settings.model_fields.items() if name not in SECRETS
        and getattr(parsed, name) != field.get_default(call_default_factory=True)
    ]
    assert differing == sorted(EXAMPLE_VALUES, key=list(Settings.model_fields).index)


def test_api_overview_lists_exactly_the_routes_the_api_serves():
    app = create_app(make_settings())
    served = {f"{r.method} {r.resource.canonical}" for r in app.router.routes()}
    overview = section(README.read_text(), "API overview")
    listed = set(re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`\s]*)`", overview))
    assert served - listed == set(), "routes missing from the README's API overview"
    assert listed - served == set(), "the README's API overview lists routes that do not exist"
    assert "(http://localhost:3001/api/docs)" in overview
    assert "(http://localhost:3001/api/openapi.json)" in overview


def test_dependency_table_explains_every_direct_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    declared = project["dependencies"] + [d for group in extras for d in group]
    names = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in declared}
    rows = table_rows(section(README.read_text(), "Dependencies"))
    explained = {name.strip().lower() for row in rows if row[1] for name in row[0].split(",")}
    assert names - explained == set()
    assert explained - names == set()


def test_local_links_point_at_files_and_headings_that_exist():
    text = README.read_text()
    headings = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            assert target[1:] in headings, f"README links to a missing heading {target}"
        else:
            assert (ROOT / target).exists(), f"README links to a missing path {target}"
