"""Runs inside privacyIDEA's virtualenv (bench/.peers/privacyidea-venv), called by
`peers.privacyidea`: adds the benchmark's end users to the realm's internal SQL resolver and
enrols one TOTP token per user with its known secret, through privacyIDEA's own `init_token`
(what POST /token/init calls), in a few processes at once.

    PRIVACYIDEA_CONFIGFILE=pi.cfg python -P privacyidea_enrol.py USERS_TSV RESOLVER REALM PROCESSES

USERS_TSV has one `userId<TAB>base32 secret` line per user. Prints one JSON line of figures.
`-P`: this directory must not be on sys.path, or `import privacyidea` finds peers/privacyidea.py.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import sys
import time

MAX_FAILURES = 1_000_000_000  # wrong codes must be checked, not refused by a locked token


def app():
    from privacyidea.app import create_app

    return create_app("production", os.environ["PRIVACYIDEA_CONFIGFILE"], silent=True)


def hex_key(secret: str) -> str:
    return base64.b32decode(secret.upper() + "=" * (-len(secret) % 8)).hex()


def enrol(job: tuple[list[tuple[str, str]], str]) -> int:
    """One process's share: one TOTP token per (userId, secret), whose serial is the userId (so
    that /validate/check can also be asked by serial)."""
    from privacyidea.lib.token import init_token
    from privacyidea.lib.user import User

    users, realm = job
    with app().app_context():
        for user_id, secret in users:
            params = {
                "type": "totp",
                "serial": user_id,
                "otpkey": hex_key(secret),
                "genkey": 0,
                "otplen": 6,
                "hashlib": "sha1",
                "timeStep": 30,
            }
            init_token(params, user=User(user_id, realm))
    return len(users)


def main() -> None:
    users_file, resolver, realm, processes = sys.argv[1:5]
    with open(users_file) as f:
        users = [tuple(line.rstrip("\n").split("\t")) for line in f if line.strip()]

    import sqlalchemy as sa
    from privacyidea.lib.config import set_privacyidea_config
    from privacyidea.models import db

    started = time.monotonic()
    with app().app_context():
        # The resolver's own table, created by `pi-manage config resolver create_internal`.
        insert = sa.text(f"INSERT INTO users_{resolver} (username) VALUES (:name)")
        db.session.execute(insert, [{"name": user_id} for user_id, _ in users])
        db.session.commit()
        # Read by init_token when it creates a token (the token's maxfail).
        set_privacyidea_config("DefaultMaxFailCount", str(MAX_FAILURES))
    n = max(1, int(processes))
    size = -(-len(users) // n)
    jobs = [(users[i : i + size], realm) for i in range(0, len(users), size)]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        enrolled = sum(pool.map(enrol, jobs))
    seconds = time.monotonic() - started
    print(json.dumps({"tokens": enrolled, "seconds": round(seconds, 1), "processes": len(jobs)}))


if __name__ == "__main__":
    main()
