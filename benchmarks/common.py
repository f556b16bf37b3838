"""What every benchmark here shares: the machine's description, timing, the matmul yardstick, JSON-line output.

Each measurement is printed as one JSON object on its own line (`emit`), so that results can be collected with
`python benchmarks/<script>.py > results.jsonl` and plotted (`plot_batch_sizes.py`) or quoted in `docs/performance.md`.
Other processes share the machine: timings are medians over repeats, with min and max to show the spread, and the
figures that are compared (fp32 against bf16, us against diffusion, model against matmul) are measured in turn inside
the same repeat so that their ratios stay meaningful when the machine's speed drifts.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import torch

from hf_stagegan.training import cpu_bf16_flags

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def emit(**fields) -> dict:
    """Prints one measurement as a JSON line (floats rounded to 4 significant digits) and returns it."""
    fields = {key: float(f"{value:.4g}") if isinstance(value, float) else value for key, value in fields.items()}
    print(json.dumps(fields), flush=True)
    return fields


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """Where the figures come from: CPU (and its bf16 units) or GPU, threads, torch version."""
    if device.type == "cuda":
        return {"device": torch.cuda.get_device_name(device), "torch": torch.__version__}
    flags = cpu_bf16_flags()  # the library's reading of /proc/cpuinfo, which train.py's --mixed_precision auto uses
    return {
        "device": cpu_name(),
        "threads": torch.get_num_threads(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "torch": torch.__version__,
    }


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call, waiting for the GPU's queue to drain."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def spread(values: list[float], scale: float = 1.0) -> dict:
    """Median, min and max of `values` times `scale`."""
    return {
        "median": statistics.median(values) * scale,
        "min": min(values) * scale,
        "max": max(values) * scale,
    }


def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int = 2048) -> Callable[[], float]:
    """A function that times one `size`^3 matmul in `dtype` and returns its GFLOP/s (the machine's yardstick)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up: oneDNN / cuBLAS pick their kernels
    return lambda: 2 * size**3 / seconds(lambda: a @ b, device) / 1e9


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def peak_memory(device: torch.device) -> dict:
    """Peak host memory (RSS) of this process and, on a GPU, the peak memory PyTorch allocated there."""
    peak = {"peak_rss_gb": peak_rss_gb()}
    if device.type == "cuda":
        peak["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1024**3
    return peak


def parse_device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
