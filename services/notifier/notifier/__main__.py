"""`python -m notifier`: run the notifier consumer until SIGINT/SIGTERM."""

from shared.consumer import run_main

from notifier.main import build

if __name__ == "__main__":
    run_main("notifier", build)
