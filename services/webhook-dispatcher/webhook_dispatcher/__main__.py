"""`python -m webhook_dispatcher`: run the webhook-dispatcher consumer until SIGINT/SIGTERM."""

from shared.consumer import run_main

from webhook_dispatcher.main import build

if __name__ == "__main__":
    run_main("webhook-dispatcher", build)
