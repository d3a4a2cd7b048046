"""Tiny models and data factories that misbehave on purpose, for the CLI tests (``--model tests.cli.models:...``)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

DIM = 4


class RowNorm(nn.Module):
    """Scales each row to unit length: an all-zero row is 0/0 = NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True)


class Broken(nn.Module):
    """norm -> fc1 -> act -> fc2. NaN starts in ``norm`` for the samples whose input row is all zeros."""

    def __init__(self, dim: int = DIM, hidden: int = 8) -> None:
        super().__init__()
        self.norm = RowNorm()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))  # (B, 2)


class Masked(nn.Module):
    """forward(x, mask): a masked mean over the sequence, then a linear layer. An all-False mask row is 0/0."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)  # (B, L, D)
        m = mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        pooled = (h * m).sum(1) / m.sum(1)  # (B, D)
        return self.head(pooled)


def make_broken(dim: int = DIM, hidden: int = 8) -> Broken:
    torch.manual_seed(0)
    return Broken(dim, hidden)


def make_masked(dim: int = DIM) -> Masked:
    torch.manual_seed(0)
    return Masked(dim)


def make_raising(**_: Any) -> nn.Module:
    raise RuntimeError("simulated: the factory cannot build this model")


def make_not_a_module(**_: Any) -> int:
    return 42


NOT_CALLABLE = 3


def make_batches(n: int = 2, size: int = 4, dim: int = DIM, zero_row: int | None = 2, seed: int = 0
                 ) -> list[torch.Tensor]:
    """``n`` batches of shape (size, dim); row ``zero_row`` of the first batch is all zeros (None: none)."""
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randn(size, dim, generator=g) + 0.1 for _ in range(n)]
    if zero_row is not None:
        batches[0][zero_row] = 0.0
    return batches


def clean_batches() -> list[torch.Tensor]:
    return make_batches(zero_row=None)


def make_masked_batches(size: int = 3, length: int = 5, empty_row: int | None = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(size, length, DIM, generator=g)
    mask = torch.ones(size, length, dtype=torch.bool)
    if empty_row is not None:
        mask[empty_row] = False
    return [{"x": x, "mask": mask}]


def no_batches() -> list[Any]:
    return []


def endless_batches() -> Iterator[torch.Tensor]:
    while True:
        yield torch.ones(2, DIM)


class CreatesFile:
    """Unpickling this object touches ``target``: a stand-in for a malicious checkpoint."""

    def __init__(self, target: pathlib.Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


class ConvNet(nn.Module):
    """A 3-channel image model (a stand-in for torchvision's resnet18 stem): a 1-channel batch makes ``conv``
    raise the same "expected input ... to have 3 channels" error."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))  # (B, 2)


def make_convnet() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet()


TINY_BERT = {"vocab_size": 50, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 16, "max_position_embeddings": 32}


def make_tiny_bert(**config: Any) -> nn.Module:
    """A Hugging Face ``BertModel`` from a tiny config (transformers is imported only when called)."""
    import transformers

    torch.manual_seed(0)
    return transformers.BertModel(transformers.BertConfig(**{**TINY_BERT, **config})).eval()


def make_batchnorm() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class Stepper(nn.Module):
    """A LightningModule-like model trained through ``training_step(batch)``, which calls ``self.net`` and a
    loss. ``net`` takes the log of a ReLU: a row of the input that is all <= 0 is log(0) = -inf, then NaN."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), Log(), nn.Linear(dim, 1))
        with torch.no_grad():
            self.net[0].weight.copy_(torch.eye(dim))
            self.net[0].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)


def make_stepper(dim: int = DIM) -> Stepper:
    torch.manual_seed(0)
    return Stepper(dim)


class Bracketed(nn.Module):
    """Submodules whose names look like rich markup (``[bold]``, ``[minilm]``); ``[minilm]`` divides each row
    by its norm, so an all-zero row is 0/0 = NaN there."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict({"[bold]": nn.Linear(dim, dim), "[minilm]": RowNorm()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks["[minilm]"](self.blocks["[bold]"](x))


def make_bracketed(dim: int = DIM) -> Bracketed:
    torch.manual_seed(0)
    model = Bracketed(dim)
    with torch.no_grad():
        model.blocks["[bold]"].weight.copy_(torch.eye(dim))
        model.blocks["[bold]"].bias.zero_()
    return model
