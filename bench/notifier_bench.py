"""Notifier benchmark: SMS and emails sent per second by one notifier process, and the latency
from a command's publication to its arrival at the provider. Prints its figures; asserts nothing.

`.venv/bin/python bench/notifier_bench.py [--messages N] [--email-share 0.5]` creates its own
database (`tfa_bench_notifier`, dropped afterwards) and broker names (prefix `bench-notifier.`,
deleted afterwards), runs the local Twilio and SMTP fakes of tests/fakes in this process and
the notifier as `python -m notifier` in a process of its own (health on 127.0.0.1:3112).

N commands (a share of them emails) are published at once straight to the events exchange,
with publisher confirms, as the API's outbox relay would. Each carries a distinct code, which
is how an arrival is matched to its command. Figures: the rate over the time from the first
arrival to the last, the publish-to-arrival latency percentiles of that burst (so mostly time
spent queued behind earlier commands; one clock: this process's `time.monotonic()`), and a
check that every command was sent exactly once and recorded 'sent'.
The providers answer at once, so this is the notifier's own cost (one HTTP request per SMS, one
SMTP session per email, two statements in PostgreSQL per message), not a provider's.
It also reports the CPU the notifier, PostgreSQL and RabbitMQ used from the publication to the
last 'sent' row (the fakes run in this process and are not counted), and the notifier's peak
resident memory; `--out` writes the figures as JSON (bench/all.py reads them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import run_bench as rb
from procstats import PeakRss

from shared import broker, db
from shared.config import Settings
from shared.crypto import SecretBox
from shared.events import Actor, Event, EventType, NotificationData
from shared.migrate import prepare
from shared.notifications import seal_code

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.smtp_server import smtp_server
from tests.fakes.twilio_server import twilio_server

DATABASE = "tfa_bench_notifier"
BROKER_PREFIX = "bench-notifier."
HEALTH_PORT = 3112
INHERITED = ("RABBITMQ_URL",)


def bench_settings(**providers: object) -> dict[str, str]:
    base_url = os.environ.get("DATABASE_URL", Settings.model_fields["DATABASE_URL"].default)
    values: dict[str, object] = {
        "DATABASE_URL": db.server_url(base_url, DATABASE),
        "BROKER_PREFIX": BROKER_PREFIX,
        "HOST": "127.0.0.1",
        "NOTIFIER_HEALTH_PORT": HEALTH_PORT,
        "LOG_LEVEL": "WARNING",
        **{name: secrets.token_hex(32) for name in Settings.model_fields if _is_secret(name)},
        **providers,
    }
    for name in INHERITED:
        if name in os.environ:
            values[name] = os.environ[name]
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}


def _is_secret(name: str) -> bool:
    return name in {
        "JWT_ACCESS_SECRET",
        "JWT_REFRESH_SECRET",
        "DEVICE_TOKEN_SECRET",
        "ENCRYPTION_KEY",
    }


def commands(settings: Settings, count: int, email_share: float) -> list[tuple[Event, str]]:
    box = SecretBox(settings.ENCRYPTION_KEY)
    emails = round(count * email_share)
    out = []
    for i in range(count):
        command_id, code = uuid.uuid4(), str(100_000 + i)
        kind = EventType.NOTIFICATION_EMAIL if i < emails else EventType.NOTIFICATION_SMS
        to = f"bench{i}@example.com" if i < emails else f"+1555{i:07d}"
        data = NotificationData(
            to=to, purpose="login", sealedCode=seal_code(box, command_id, code), expiresInMinutes=10
        )
        event = Event.build(
            kind, data, ownerId=uuid.uuid4(), actor=Actor(kind="system", id="bench"), id=command_id
        )
        out.append((event, code))
    return out


async def publish(settings: Settings, events: list[Event]) -> None:
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await broker.declare_topology(channel, broker.Topology(BROKER_PREFIX))
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        e.to_bytes(),
                        message_id=str(e.id),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=e.type.value,
                )
                for e in events
            )
        )


async def wait_ready(process: asyncio.subprocess.Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise SystemExit(f"the notifier exited with {process.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{HEALTH_PORT}/health/ready") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("the notifier did not become ready")


async def cleanup(settings: Settings) -> None:
    await db.drop_database(settings.DATABASE_URL)
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        topology = broker.Topology(BROKER_PREFIX)
        for name in topology.all_queues(settings.CONSUMER_RETRY_DELAYS):
            await channel.queue_delete(name)
        await channel.exchange_delete(topology.exchange)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run(count: int, email_share: float) -> dict[str, Any]:
    async with twilio_server() as twilio, smtp_server() as smtp:
        env = bench_settings(**twilio.settings(), **smtp.settings(EMAIL_FROM="bench@example.com"))
        settings = Settings(_env_file=None, **env)  # type: ignore[arg-type]
        await cleanup(settings)
        await prepare(settings)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier",
            cwd=ROOT,
            env={**{k: v for k, v in os.environ.items() if k not in Settings.model_fields}, **env},
        )
        try:
            await wait_ready(process)
            work = commands(settings, count, email_share)
            sms = sum(e.type == EventType.NOTIFICATION_SMS for e, _ in work)
            emails = count - sms
            meter = rb.CpuMeter({"notifier": process.pid})
            rss = PeakRss({"notifier": [process.pid]}).start()
            before = meter.snapshot()
            published = time.monotonic()
            await publish(settings, [e for e, _ in work])
            print(
                f"published {count} commands ({sms} SMS, {emails} emails) in "
                f"{time.monotonic() - published:.2f}s"
            )
            await twilio.wait_for(sms, timeout=300)
            await smtp.wait_for(emails, timeout=300)
            arrivals = {m.code: m.received_at for m in twilio.messages}
            arrivals |= {m.code: m.received_at for m in smtp.messages}
            conn = await asyncpg.connect(settings.DATABASE_URL)
            try:
                for _ in range(50):
                    sent = await conn.fetchval(
                        "SELECT count(*) FROM notifications WHERE status = 'sent'"
                    )
                    if sent >= count:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await conn.close()
            cpu = meter.usage(before, meter.snapshot(), top=5)
            peak = rss.stop()
        finally:
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), timeout=20)
            await cleanup(settings)
    times = sorted(arrivals.values())
    span = times[-1] - times[0]
    latencies = [(arrivals[code] - published) * 1000 for _, code in work]
    print(
        f"throughput: {count / span if span else float('inf'):.0f} messages/s "
        f"(first to last arrival: {span:.2f}s)"
    )
    print(
        "latency from publication, ms: "
        + ", ".join(f"p{p} {percentile(latencies, p):.0f}" for p in (50, 90, 99))
        + f", max {max(latencies):.0f}"
    )
    duplicates = len(twilio.messages) + len(smtp.messages) - count
    print(f"sent exactly once: {duplicates == 0} (duplicates: {duplicates}); rows 'sent': {sent}")
    rate = count / span if span else 0.0
    used = cpu["consumers"] + cpu["postgres"] + cpu["rabbitmq"]  # the notifier is "consumers"
    print(
        f"CPU: notifier {cpu['consumers']}, postgres {cpu['postgres']}, rabbitmq "
        f"{cpu['rabbitmq']}, machine {cpu['machine']} cores over {cpu['seconds']} s; "
        f"peak RSS {peak['mb']} MB"
    )
    return {
        "messages": count,
        "sms": sms,
        "emails": emails,
        "seconds": round(span, 2),
        "messages_per_second": round(rate, 1),
        "latency_from_publication_ms": {
            f"p{p}": round(percentile(latencies, p), 1) for p in (50, 90, 99)
        }
        | {"max": round(max(latencies), 1)},
        "duplicates": duplicates,
        "rows_sent": sent,
        "missing": max(0, count - len(arrivals)),
        "cpu_cores": cpu,
        "cpu_seconds_per_1000": round(1000 * used * cpu["seconds"] / count, 2),
        "peak_rss_mb": peak["mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--email-share", type=float, default=0.5)
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    result = asyncio.run(run(args.messages, args.email_share))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"notifier": result}, indent=2) + "\n")
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
