"""Lightning modules for the integration tests (importable, so a bundle's pickled module can be replayed)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BATCH = 8
BAD_ROW = 2
LR = 0.05


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)  # NaN for a negative input


class LitLogNet(pl.LightningModule):
    """``training_step`` calls ``self.net(x)``: ``forward`` is never called (the issue's case)."""

    def __init__(self, lr: float = LR) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(Log(), nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))
        self.rows = torchmetrics.SumMetric()  # counts the rows training_step saw (finite even after a NaN)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x).squeeze(-1), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("calls", 1.0, on_step=False, on_epoch=True, reduce_fx="sum")
        self.rows.update(torch.ones(len(x)))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("rows", self.rows.compute())

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x).squeeze(-1), y)
        self.log("val_loss", loss)
        return loss  # what the step returns is what the callback checks

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class LitRegression(pl.LightningModule):
    """A plain MSE regression (training and validation step) trained by ``make_optimizer(parameters)``;
    ``layer_norm``: a LayerNorm after the hidden layer."""

    def __init__(self, make_optimizer: Any, layer_norm: bool = False) -> None:
        super().__init__()
        norm = [nn.LayerNorm(32)] if layer_norm else []
        self.net = nn.Sequential(nn.Linear(8, 32), *norm, nn.ReLU(), nn.Linear(32, 1))
        self.make_optimizer = make_optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return ((self.net(x).squeeze(-1) - y) ** 2).mean()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.training_step(batch, batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.parameters())


def regression_loader(rows: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(rows, 8, generator=g), torch.randn(rows, generator=g)),
                      batch_size=BATCH)


def loader(steps: int, bad_step: int | None = None) -> DataLoader:
    """``steps`` batches of 8 positive rows; at ``bad_step`` row 2 has a negative value (log -> NaN)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(steps * BATCH, 8, generator=g) + 0.5
    y = torch.randn(steps * BATCH, generator=g)
    if bad_step is not None:
        x[bad_step * BATCH + BAD_ROW, 3] = -1.0
    return DataLoader(TensorDataset(x, y), batch_size=BATCH)


def trainer(callbacks: list[Any], max_steps: int, **kwargs: Any) -> pl.Trainer:
    settings: dict[str, Any] = dict(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, num_sanity_val_steps=0)
    settings.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **settings)
