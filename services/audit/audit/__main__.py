"""`python -m audit`: run the audit consumer until SIGINT/SIGTERM."""

from shared.consumer import run_main

from audit.main import build

if __name__ == "__main__":
    run_main("audit", build)
