"""env.json: what the run's software and numerics switches were (versions, device, torch flags)."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch
from torch import nn

from nanprobe._version import __version__

__all__ = ["collect_env"]


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _device_info(model: nn.Module | None) -> dict[str, Any]:
    device = None
    dtypes: list[str] = []
    if model is not None:
        params = list(model.parameters())
        device = str(params[0].device) if params else None
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params})
    info: dict[str, Any] = {"model_device": device, "param_dtypes": dtypes, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["cuda_version"] = torch.version.cuda
        names = [_safe(lambda i=i: torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
        info["cuda_devices"] = names
        info["cudnn_version"] = _safe(torch.backends.cudnn.version)
    return info


def collect_env(model: nn.Module | None = None) -> dict[str, Any]:
    """JSON-ready description of versions, device and the global switches that change numerics."""
    try:
        import numpy

        numpy_version: str | None = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a dependency
        numpy_version = None
    flags = {
        "mha_fastpath": _safe(torch.backends.mha.get_fastpath_enabled),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "default_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "grad_enabled": torch.is_grad_enabled(),
        "anomaly_detection": torch.is_anomaly_enabled(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "sdpa_flash": _safe(torch.backends.cuda.flash_sdp_enabled),
        "sdpa_mem_efficient": _safe(torch.backends.cuda.mem_efficient_sdp_enabled),
        "sdpa_math": _safe(torch.backends.cuda.math_sdp_enabled),
    }
    dist: dict[str, Any] = {"initialized": torch.distributed.is_available() and torch.distributed.is_initialized()}
    if dist["initialized"]:
        dist.update(backend=str(torch.distributed.get_backend()), rank=torch.distributed.get_rank(),
                    world_size=torch.distributed.get_world_size())
    return {
        "nanprobe": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy_version,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "pid": os.getpid(),
        "device": _device_info(model),
        "flags": flags,
        "distributed": dist,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG",
                                           "RANK", "WORLD_SIZE", "LOCAL_RANK") if k in os.environ},
    }
