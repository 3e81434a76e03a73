"""`python -m api`: serve the API on $PORT until SIGINT/SIGTERM."""

from aiohttp import web

from shared.config import load_settings
from shared.logs import configure_logging

from api.app import create_app


def main() -> None:
    settings = load_settings()
    configure_logging(settings, "api")
    web.run_app(
        create_app(settings),
        host=settings.HOST,
        port=settings.PORT,
        access_log=None,
        print=None,
        shutdown_timeout=10,
    )


if __name__ == "__main__":
    main()
