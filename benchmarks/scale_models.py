"""The models of the scale benchmark: Hugging Face ``GPT2LMHeadModel``s built from configs (no downloads), one
MLP weight scaled so that the residual stream overflows float32, saved as a checkpoint plus a batch file that
``nanprobe trace CKPT --model benchmarks.scale_models:build_gpt2 --batches BATCHES`` reads.

    python -c "from benchmarks.scale_models import make_case; print(make_case('gpt2-small', 'cases'))"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FACTORY", "OVERFLOW_SCALE", "SIZES", "Case", "Size", "build_gpt2", "faulty_weight", "make_case",
           "make_model", "parameter_count"]

FACTORY = "benchmarks.scale_models:build_gpt2"  # what --model names
# h.{n_layer/2}.mlp.c_fc.weight times this: the block's output reaches ~4e36 (GPT-2 small, seed 0), the next
# block's ln_1 squares it (variance > 3.4e38, float32's largest) and returns NaN; float64 would not overflow.
OVERFLOW_SCALE = 1e37


@dataclass(frozen=True)
class Size:
    name: str
    config: dict[str, Any]  # GPT2Config keyword arguments (JSON-ready: stored in the checkpoint)
    batch: tuple[int, int]  # (B, T) of the one batch of input_ids

    @property
    def faulty_layer(self) -> int:
        """The block whose MLP weight is scaled: the middle one, the same relative depth for every size."""
        return int(self.config["n_layer"]) // 2


def _gpt2(n_layer: int, n_embd: int, n_head: int, vocab_size: int, n_positions: int = 1024) -> dict[str, Any]:
    return {"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "vocab_size": vocab_size,
            "n_positions": n_positions, "bos_token_id": vocab_size - 1, "eos_token_id": vocab_size - 1}


SIZES: dict[str, Size] = {s.name: s for s in (
    Size("gpt2-small", _gpt2(12, 768, 12, 50257), (8, 128)),  # GPT-2 small's shape: 124M parameters
    Size("gpt2-deep", _gpt2(24, 768, 12, 50257), (8, 128)),  # twice as deep: 209M
    Size("quick-small", _gpt2(2, 64, 2, 1000, 64), (2, 16)),  # for --quick (the test): seconds, not minutes
    Size("quick-deep", _gpt2(4, 64, 2, 1000, 64), (2, 16)),
)}


def build_gpt2(**config: Any) -> nn.Module:
    """The factory ``nanprobe trace --model`` calls with the checkpoint's ``config``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(**config))


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters (the tied lm_head / wte weight counted once), as Hugging Face reports it."""
    return sum(p.numel() for p in model.parameters())


def faulty_weight(size: Size) -> str:
    return f"transformer.h.{size.faulty_layer}.mlp.c_fc.weight"


def make_model(size: Size, *, faulty: bool = True, seed: int = 0) -> nn.Module:
    """The size's model, random init under ``seed``; with ``faulty`` its middle MLP weight scaled by
    :data:`OVERFLOW_SCALE`."""
    torch.manual_seed(seed)
    model = build_gpt2(**size.config)
    if faulty:
        with torch.no_grad():
            model.get_parameter(faulty_weight(size)).mul_(OVERFLOW_SCALE)
    return model.eval()


def make_batches(size: Size, *, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed + 1)
    b, t = size.batch
    return [{"input_ids": torch.randint(0, int(size.config["vocab_size"]), (b, t), generator=g)}]


@dataclass
class Case:
    size: Size
    checkpoint: Path
    batches: Path
    parameters: int
    faulty_weight: str
    files_mib: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size.name, "config": self.size.config, "batch": list(self.size.batch),
                "parameters": self.parameters, "faulty_weight": self.faulty_weight,
                "overflow_scale": OVERFLOW_SCALE, "files_mib": self.files_mib}


def make_case(size: Size | str, directory: str | Path, *, seed: int = 0) -> Case:
    """Write ``{size}.pt`` ({"model_state_dict", "config"}) and ``{size}-batches.pt`` (a list of one dict
    batch) into ``directory``. Whether the output really is non-finite is checked by the baseline run."""
    size = SIZES[size] if isinstance(size, str) else size
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = make_model(size, faulty=True, seed=seed)
    case = Case(size, directory / f"{size.name}.pt", directory / f"{size.name}-batches.pt",
                parameter_count(model), faulty_weight(size))
    torch.save({"model_state_dict": model.state_dict(), "config": dict(size.config)}, case.checkpoint)
    torch.save(make_batches(size, seed=seed), case.batches)
    case.files_mib = {p.name: round(p.stat().st_size / 2**20, 1) for p in (case.checkpoint, case.batches)}
    return case
