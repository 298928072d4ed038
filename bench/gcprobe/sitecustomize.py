"""Garbage-collector pause log for the benchmark's server processes (bench/run.py puts this directory on
PYTHONPATH and names the log file in BENCH_GC_LOG; without it this module does nothing).

One line per collection that took at least 1 ms or was a full (generation 2) collection:
`<unix time at the end> <generation> <pause ms>`. Two clock reads per collection: no measurable cost.
"""

import gc
import os
import time

_path = os.environ.get("BENCH_GC_LOG")
if _path:
    _log = open(_path, "a", buffering=1)  # noqa: SIM115 (open for the life of the process)
    _started = [0.0]

    def _on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - _started[0]) * 1000
        if ms >= 1.0 or info.get("generation") == 2:
            _log.write(f"{time.time():.4f} {info.get('generation')} {ms:.2f}\n")

    gc.callbacks.append(_on_gc)
