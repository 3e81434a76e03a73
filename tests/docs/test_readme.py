"""Following the README works: every shell command it shows runs, in order, as a newcomer would
type it, against `make run` started the way the README says, in a clean copy of the repository;
each exits 0, no JSON answer is an error, and each output matches the `# →` response printed
under it. A command that cannot run here is listed below with the reason; one that is neither
run nor listed fails the test, and so does a listed one the README no longer shows."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp

from tests.docs.newcomer import Newcomer, make_run
from tests.ports import free_port
from tests.docs.readme import README, Command, commands
from tests.fakes.twilio_server import FakeTwilio, twilio_server

# Commands the README shows that are not run here (matched by how they start), and why.
NOT_RUN = {
    "make test": "runs the whole suite, this test included",
    "docker compose up -d --scale webhook-dispatcher=3":
        "needs a Docker daemon, which this machine lacks (tests/deploy checks the Compose file)",
}
# `make run` stays in the foreground until Ctrl-C; the README has the reader keep it in another
# terminal, so it is started first, in the background (newcomer.make_run), and stopped last.
IN_BACKGROUND = {"make run"}
# The audit consumer writes an entry moments after its event: run again until the answer shows it.
RETRIED = {'curl "http://localhost:3001/api/audit-logs?': 15.0}
PHONE = "+14155552671"


@dataclass(repr=False)
class Reader:
    """What the reader has seen so far, for filling in what the README asks them to."""

    newcomer: Newcomer
    twilio: FakeTwilio
    webhook_url: str
    outputs: list[tuple[Command, str]] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)

    def answer_to(self, fragment: str) -> dict[str, Any]:
        """The JSON printed by the last command containing `fragment`."""
        for command, output in reversed(self.outputs):
            if fragment in command.text:
                return json.loads(output)
        raise AssertionError(f"no command with {fragment!r} ran before")


async def api_key(reader: Reader) -> str:
    return str(reader.answer_to("/api/api-keys")["apiKey"])


def code(value: Callable[[Reader], Awaitable[str]]) -> Callable[[Reader], Awaitable[str]]:
    async def field(reader: Reader) -> str:
        return f'"code": "{await value(reader)}"'

    return field


async def totp_now(reader: Reader) -> str:
    return pyotp.TOTP(reader.answer_to("/api/2fa/totp/setup")["secret"]).now()


def texted(count: int) -> Callable[[Reader], Awaitable[str]]:
    async def last_code(reader: Reader) -> str:
        sms = (await reader.twilio.wait_for(count, to=PHONE))[count - 1]
        assert sms.code, sms.body
        return sms.code

    return last_code


async def webhook_url(reader: Reader) -> str:
    return reader.webhook_url


@dataclass(frozen=True)
class Placeholder:
    """Text the README tells the reader to replace, what they would put there, and why."""

    text: str
    value: Callable[[Reader], Awaitable[str]]
    why: str


PLACEHOLDERS = [
    Placeholder("tfa_…", api_key, "the apiKey from the response above"),
    Placeholder('"code": "123456"', code(totp_now), "the code the authenticator app shows"),
    Placeholder('"code": "493021"', code(texted(1)), "the code texted to the phone at setup"),
    Placeholder('"code": "118305"', code(texted(2)), "the code texted for the login"),
    Placeholder("https://yourapp.com/webhooks/2fa", webhook_url,
                "your own receiver's URL (yourapp.com does not resolve here)"),
]


def listed(command: Command, names: set[str] | dict[str, Any]) -> str | None:
    return next((name for name in names if command.text.startswith(name)), None)


async def fill_in(reader: Reader, command: Command, used: set[str]) -> Command:
    """The command as the reader types it: their port, and their values for the placeholders
    (also in the response shown, where it repeats them)."""
    text = command.text.replace("localhost:3001", f"localhost:{reader.newcomer.port}")
    expected = command.expected
    for placeholder in PLACEHOLDERS:
        if placeholder.text in text:
            used.add(placeholder.text)
            value = await placeholder.value(reader)
            text = text.replace(placeholder.text, value)
            expected = expected.replace(placeholder.text, value) if expected else expected
    return Command(text, command.line, expected)


async def run_in_shell(reader: Reader, source: str) -> tuple[int, str, str]:
    """Run `source` in bash with the variables the reader's shell holds; keep what it sets."""
    with tempfile.NamedTemporaryFile(prefix="readme-env-") as state_file:
        script = f"set -a -o pipefail\n{source}\n__rc=$?\nenv -0 > {state_file.name}\nexit $__rc\n"
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", script, cwd=reader.newcomer.root,
            env={**reader.newcomer.env, **reader.state},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        pairs = Path(state_file.name).read_bytes().decode().split("\0")
    reader.state = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def problem(command: Command, rc: int, out: str, err: str) -> str | None:
    if rc != 0:
        return f"exited {rc}"
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("success") is False:
        return "answered with an error"
    if command.expected is not None and not command.matches(out):
        return f"printed something else than\n  {command.expected}"
    return None


async def follow(reader: Reader, command: Command, used: set[str]) -> None:
    filled = await fill_in(reader, command, used)
    deadline = time.monotonic() + RETRIED.get(listed(command, RETRIED) or "", 0.0)
    while True:
        rc, out, err = await run_in_shell(reader, filled.text)
        wrong = problem(filled, rc, out, err)
        if wrong is None or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    assert wrong is None, (
        f"README line {command.line}: the command\n{filled.text}\n{wrong}\n"
        f"stdout: {out[:2000]}\nstderr: {err[-2000:]}"
    )
    reader.outputs.append((filled, out))


async def test_every_shell_command_in_the_readme_runs_as_shown():
    shown = commands(README.read_text())
    for name in [*NOT_RUN, *IN_BACKGROUND]:
        count = len([c for c in shown if c.text.startswith(name)])
        assert count == 1, f"{name!r} is listed here but the README shows it {count} times"
    # The SMS section needs Twilio: a local fake speaking its API stands in for it. The webhook
    # placeholder becomes a URL on this machine, which only WEBHOOK_ALLOW_PRIVATE_URLS permits.
    async with twilio_server() as twilio:
        extra = {**twilio.settings(), "WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
        async with make_run(extra) as newcomer:
            reader = Reader(newcomer, twilio, f"http://127.0.0.1:{free_port()}/webhooks/2fa")
            used: set[str] = set()
            for command in shown:
                if not (listed(command, NOT_RUN) or listed(command, IN_BACKGROUND)):
                    await follow(reader, command, used)
    assert used == {p.text for p in PLACEHOLDERS}, "a placeholder listed here is not in the README"
