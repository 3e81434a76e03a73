"""Peak resident memory of the benchmark's services, per scenario.

Linux keeps each process's peak resident set size (`VmHWM` in /proc/<pid>/status) and lets its
owner (here root) reset it to the current size by writing 5 to /proc/<pid>/clear_refs. So
`PeakRss.start()` resets the peak of every process of every service and `stop()` reads it: the
most memory each process held at any moment of the scenario, without sampling. A service with
several processes (the API with API_WORKERS > 1, gunicorn's workers) is reported as the sum of
its processes' peaks, an upper bound (forked workers share pages, and their peaks need not
coincide). Where the reset is refused, the peak is since the process started, and `reset` in
the result says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_kib(pid: int) -> int | None:
    """VmHWM of `pid` in KiB; None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


class PeakRss:
    """Peak RSS (MB) per service over an interval; `services`: name -> its pids."""

    def __init__(self, services: Mapping[str, Iterable[int]]) -> None:
        self.services = {name: list(pids) for name, pids in services.items()}
        self.reset = False

    def start(self) -> PeakRss:
        pids = [pid for pids in self.services.values() for pid in pids]
        done = [reset_peak(pid) for pid in pids]  # every one, not up to the first refusal
        self.reset = bool(done) and all(done)
        return self

    def stop(self) -> dict[str, Any]:
        """{service: MB} (services whose processes are all gone are left out), and whether
        the peaks are the interval's (`reset`) or since each process started."""
        peaks: dict[str, float] = {}
        for name, pids in self.services.items():
            found = [k for k in (peak_kib(pid) for pid in pids) if k is not None]
            if found:
                peaks[name] = round(sum(found) / 1024, 1)
        return {"mb": peaks, "reset": self.reset}
