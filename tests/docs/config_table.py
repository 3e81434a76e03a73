"""The README's configuration table, rendered from `shared.config.Settings`.

Names, order and defaults come from the Settings class; the "what it does" text of each row is
kept from the README itself. `python -m tests.docs.config_table --write` refreshes the table in
README.md after a setting is added, removed or changes its default (a new row's text starts
empty, and the test refuses an empty one).
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic_core import PydanticUndefined

from shared.config import MIN_SECRET_LENGTH, Settings

from tests.docs.readme import README, section, table_rows

SECTION = "Configuration"
HEADER = "| Variable | Default | What it does |\n|---|---|---|"


def env_form(value: Any) -> str:
    """A value as it would be written in `.env`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def default_cell(name: str) -> str:
    field = Settings.model_fields[name]
    if field.is_required():
        return f"required, ≥ {MIN_SECRET_LENGTH} characters"
    value = field.get_default(call_default_factory=True)
    assert value is not PydanticUndefined
    if value is None:
        return "unset"
    text = env_form(value)
    return f"`{text}`" if text else "empty"


def documented(text: str) -> dict[str, tuple[str, str]]:
    """(default cell, description) of each variable in the README's table."""
    rows = table_rows(section(text, SECTION))
    return {row[0].strip("`"): (row[1], row[2]) for row in rows if len(row) == 3}


def render(descriptions: dict[str, str]) -> str:
    lines = [HEADER]
    for name in Settings.model_fields:
        lines.append(f"| `{name}` | {default_cell(name)} | {descriptions.get(name, '')} |")
    return "\n".join(lines)


def current_table(text: str) -> str:
    body = section(text, SECTION)
    start = body.index(HEADER)
    end = body.find("\n\n", start)
    return body[start : end if end != -1 else len(body)].rstrip("\n")


def expected_table(text: str) -> str:
    return render({name: desc for name, (_, desc) in documented(text).items()})


def main() -> int:
    text = README.read_text()
    new = expected_table(text)
    if "--write" in sys.argv:
        README.write_text(text.replace(current_table(text), new, 1))
    else:
        print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
