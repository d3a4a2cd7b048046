"""What the README's examples run against: tiny models, the names a Python block may use (``model``, ``batch``,
``loader``, ...) and the files a shell block's commands read (a checkpoint, batch files, a monitor bundle).

A block picks its setup with ``<!-- docs: setup=NAME -->`` (see :mod:`tests.docs.readme`); without one a Python
block gets ``tiny_model`` and a shell block gets ``cli_files``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["PYTHON_SETUPS", "SHELL_SETUPS", "TinyNet", "TokenClassifier", "names", "write_cli_files"]

DIM, HIDDEN = 8, 16
BUNDLE = "nan-bundles/tinynet-step3"  # what the README's report/replay examples name


class RowNorm(nn.Module):
    """Scales each row to unit length: an all-zero row is 0/0 = NaN (the bug the examples find)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True)


class TinyNet(nn.Module):
    """embed -> norm -> act -> head; NaN starts in ``norm`` for a sample whose embedding is all zeros."""

    def __init__(self, dim: int = DIM, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, hidden, bias=False)
        self.norm = RowNorm()
        self.act = nn.ReLU()
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.norm(self.embed(x))))  # (B, 2)


def build(dim: int = DIM, hidden: int = HIDDEN) -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(dim, hidden)


def make_batch(size: int = 4, zero_row: int | None = 2, seed: int = 0) -> torch.Tensor:
    """(size, DIM) random rows; row ``zero_row`` all zeros (None: none)."""
    x = torch.randn(size, DIM, generator=torch.Generator().manual_seed(seed)) + 0.1
    if zero_row is not None:
        x[zero_row] = 0.0
    return x


class TokenClassifier(nn.Module):
    """Token ids -> embedding -> masked mean (padding id 0; an all-padding row gives zeros, not 0/0) -> logits."""

    def __init__(self, vocab: int = 50, dim: int = HIDDEN) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.head = nn.Linear(dim, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = (ids != 0).unsqueeze(-1).float()  # (B, L, 1)
        pooled = (self.emb(ids) * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, D)
        return self.head(pooled)


def build_classifier(cfg: dict[str, Any]) -> TokenClassifier:
    torch.manual_seed(0)
    return TokenClassifier(**cfg)


# -- Python setups: the names a block may use --------------------------------------------------------------

def _tiny_model() -> dict[str, Any]:
    model = build()
    return {
        "model": model,
        "batch": make_batch(),  # row 2 is all zeros: NaN from model.norm
        "loader": [make_batch(zero_row=None, seed=s) for s in range(3)],  # clean batches
        "loss_fn": lambda out: out.pow(2).mean(),
        "opt": torch.optim.SGD(model.parameters(), lr=0.01),
        "yaml_config": {"model": {"dim": DIM, "hidden": HIDDEN}},
        "torch": torch,
        "nn": nn,
    }


def _pytest() -> dict[str, Any]:
    cfg = {"vocab": 50, "dim": HIDDEN}

    def make_batch_ids() -> torch.Tensor:
        return torch.randint(1, 50, (4, 6), generator=torch.Generator().manual_seed(0))

    return {"cfg": cfg, "build_model": build_classifier, "model": build_classifier(cfg),
            "batch": {"ids": make_batch_ids()}, "make_batch": make_batch_ids}


PYTHON_SETUPS: dict[str, Callable[[], dict[str, Any]]] = {"tiny_model": _tiny_model, "pytest": _pytest,
                                                         "none": dict}


def names(setup: str) -> dict[str, Any]:
    """The globals a Python block of this setup starts with."""
    return PYTHON_SETUPS[setup]()


# -- shell setups: the files a block's commands read ------------------------------------------------------

_PACKAGE = '''"""The user's own package, as the README's commands name it (mypkg.models:build)."""
from tests.docs.fixtures import build  # noqa: F401
'''


def write_cli_files(folder: Path) -> None:
    """``mypkg/models.py`` (``build``), ``ckpt.pt`` (a state dict and its config: needs ``--model``),
    ``bad_batch.pt`` (row 2 all zeros) and ``good_batch.pt``, and the monitor bundle ``nan-bundles/tinynet-step3``
    (factory ``mypkg.models:build``: replays without ``--trust-pickle``)."""
    from nanprobe.errors import NonFiniteError
    from nanprobe.monitoring import monitor

    package = folder / "mypkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(_PACKAGE)
    model = build()
    torch.save({"state_dict": model.state_dict(), "config": {"dim": DIM, "hidden": HIDDEN}}, folder / "ckpt.pt")
    torch.save([make_batch()], folder / "bad_batch.pt")
    torch.save([make_batch(zero_row=None)], folder / "good_batch.pt")
    try:
        with monitor(model, out_dir=folder / "nan-bundles", factory="mypkg.models:build",
                     config={"dim": DIM, "hidden": HIDDEN}) as mon, torch.no_grad():
            for seed in range(3):
                mon.log(loss=0.5 - 0.1 * seed)
                model(make_batch(zero_row=None, seed=seed))
            model(make_batch())  # step 3
    except NonFiniteError:
        pass
    assert (folder / BUNDLE).is_dir(), sorted(p.name for p in (folder / "nan-bundles").iterdir())


SHELL_SETUPS: dict[str, Callable[[Path], None]] = {"cli_files": write_cli_files, "none": lambda folder: None}
