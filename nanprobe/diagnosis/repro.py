"""A standalone repro of the origin module: its inputs, state, RNG and a script that exits 1 on non-finite."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanprobe.batches import map_tensors
from nanprobe.rng import RNGState

__all__ = ["write_repro"]

_SCRIPT = '''\
"""Standalone repro written by nanprobe: {name} ({module_type}) goes non-finite on the saved inputs.

Run: python repro.py   (exit status 1 = reproduced, 0 = output finite)
module.pt is the whole pickled module (torch.save(module)); loading it runs pickle, so it needs
weights_only=False and the module's class importable: the paths below are added to sys.path.
state_dict.pt holds its parameters and buffers alone (weights_only-safe) if you rebuild the class yourself.
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
for path in {paths!r}:
    if path not in sys.path:
        sys.path.insert(0, path)

module = torch.load(os.path.join(HERE, "module.pt"), weights_only=False)
module.load_state_dict(torch.load(os.path.join(HERE, "state_dict.pt"), weights_only=True))
inputs = torch.load(os.path.join(HERE, "inputs.pt"), weights_only=False)
rng = torch.load(os.path.join(HERE, "rng.pt"), weights_only=True)
torch.set_rng_state(rng["torch_cpu"])
torch.backends.mha.set_fastpath_enabled({fastpath!r})
module.train({training!r})
with torch.set_grad_enabled({grad!r}):
    out = module(*inputs["args"], **inputs["kwargs"])


def leaves(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from leaves(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from leaves(v)


bad = [t for t in leaves(out) if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())]
if bad:
    print("reproduced: {name} ({module_type}) output is non-finite")
    sys.exit(1)
print("not reproduced: output finite")
sys.exit(0)
'''


def _import_roots(module: nn.Module) -> list[str]:
    """Directories to put on sys.path so the module's class (and its package) can be imported."""
    roots = [os.getcwd()]
    mod = sys.modules.get(type(module).__module__)
    filename = getattr(mod, "__file__", None)
    if filename:
        root = Path(filename).resolve().parent
        for _ in range(type(module).__module__.count(".")):
            root = root.parent
        roots.insert(0, str(root))
    return roots


def write_repro(directory: Path, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                rng: RNGState, name: str, training: bool, grad: bool, fastpath: bool) -> Path:
    """Write module.pt, state_dict.pt, inputs.pt, rng.pt and repro.py into ``directory``; returns repro.py."""
    directory.mkdir(parents=True, exist_ok=True)
    memo: dict[int, torch.Tensor] = {}

    def detach(t: torch.Tensor) -> torch.Tensor:  # keeps aliasing: MHA's fast path needs query is key is value
        if id(t) not in memo:
            memo[id(t)] = t.detach().clone()
        return memo[id(t)]

    torch.save(module, directory / "module.pt")
    torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, directory / "state_dict.pt")
    torch.save({"args": map_tensors(tuple(args), detach), "kwargs": map_tensors(dict(kwargs), detach)},
               directory / "inputs.pt")
    torch.save({"torch_cpu": rng.torch_cpu}, directory / "rng.pt")
    script = directory / "repro.py"
    script.write_text(_SCRIPT.format(name=name or "<root>", module_type=type(module).__name__,
                                     paths=_import_roots(module), fastpath=fastpath, training=training, grad=grad))
    return script
