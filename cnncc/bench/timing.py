"""Interleaved timing: rounds that time every engine once in a rotated order, samples long
enough to measure, median / min / max."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import numpy as np


def calibrate(fn: Callable[[], object], min_sample_s: float) -> int:
    """How many calls make one sample last at least ``min_sample_s``."""
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, int(min_sample_s / one + 0.999))


def sample(fn: Callable[[], object], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def interleaved(fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 3, min_sample_s: float = 0.002,
                progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Per-call seconds, ``repeat`` samples per engine, rounds interleaved in rotated order."""
    names = list(fns)
    if not names:   # every engine was skipped (e.g. target cuda without a GPU): nothing to time
        return {}
    for name in names:
        for _ in range(warmup):
            fns[name]()
    inner = {name: calibrate(fns[name], min_sample_s) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            samples[name].append(sample(fns[name], inner[name]))
        if progress:
            progress(f"round {r + 1}/{repeat}")
    return samples


def stats(samples: Sequence[float]) -> dict:
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples),
            "samples": len(samples)}


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
