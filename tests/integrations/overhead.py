"""The callbacks' cost inside each framework: a training step bare and with nanprobe, runs interleaved in one
process, medians of the repeats (steps after the 10th; startup excluded).

    python -m tests.integrations.overhead [--repeats 5] [--size small|large] [--only accelerate ...]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
import transformers
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from nanprobe.integrations.accelerate import monitor as accelerate_monitor
from nanprobe.integrations.lightning import NanprobeCallback as LightningCallback
from nanprobe.integrations.transformers import NanprobeCallback as TrainerCallback
from tests.integrations.lit_models import LitLogNet, Log, trainer

SIZES = {  # width, batch, layers, steps (Lightning / HF / accelerate)
    "small": {"width": 256, "batch": 8, "bert": (16, 2, 4, 6, 32), "steps": (150, 80, 300)},
    "large": {"width": 1024, "batch": 256, "bert": (256, 4, 16, 64, 1000), "steps": (60, 30, 80)},
}
WARM = 10


def _mlp(inputs: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))


class _LightningTimer(pl.Callback):
    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, index: int) -> None:
        if trainer.global_step == WARM:
            self.start = time.perf_counter()

    def on_train_end(self, trainer: Any, module: Any) -> None:
        self.per_step = (time.perf_counter() - self.start) / (trainer.global_step - WARM)


class _TrainerTimer(transformers.TrainerCallback):
    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == WARM:
            self.start = time.perf_counter()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.per_step = (time.perf_counter() - self.start) / (state.global_step - WARM)


def lightning(size: dict, watch: bool, out: str) -> float:
    class Wide(LitLogNet):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(Log(), _mlp(8, size["width"]))

    steps, batch = size["steps"][0], size["batch"]
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(steps * batch, 8, generator=g) + 0.5, torch.randn(steps * batch, generator=g))
    timer = _LightningTimer()
    fit = trainer([timer, *([LightningCallback(out)] if watch else [])], steps)
    fit.fit(Wide(), DataLoader(data, batch_size=batch))
    return timer.per_step


class _Tokens(IterableDataset):
    def __init__(self, rows: int, length: int, vocab: int) -> None:
        self.rows, self.length, self.vocab = rows, length, vocab

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(self.rows):
            g = torch.Generator().manual_seed(i)
            yield {"input_ids": torch.randint(0, self.vocab, (self.length,), generator=g),
                   "labels": torch.randint(0, self.vocab, (self.length,), generator=g)}


def hf_trainer(size: dict, watch: bool, out: str) -> float:
    hidden, layers, batch, length, vocab = size["bert"]
    steps = size["steps"][1]
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=4 if hidden >= 64 else 2, intermediate_size=4 * hidden,
                                     max_position_embeddings=max(length, 16))
    timer = _TrainerTimer()
    args = transformers.TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps,
                                          logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                                          disable_tqdm=True)
    run = transformers.Trainer(model=transformers.BertForMaskedLM(config), args=args,
                               train_dataset=_Tokens(steps * batch, length, vocab),
                               callbacks=[timer, *([TrainerCallback(out)] if watch else [])])
    run.train()
    return timer.per_step


def accelerate_loop(size: dict, watch: bool, out: str, accelerator: Accelerator) -> float:
    steps = size["steps"][2]
    torch.manual_seed(0)
    model = _mlp(64, size["width"])
    model, opt = accelerator.prepare(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    xs = [torch.randn(max(size["batch"], 32), 64) for _ in range(steps)]
    mon = accelerate_monitor(accelerator, model, out, optimizer=opt).start() if watch else None
    try:
        for i, x in enumerate(xs):
            if i == WARM:
                start = time.perf_counter()
            accelerator.backward(model(x).pow(2).mean())
            if mon is not None:
                mon.after_backward()
            opt.step()
            opt.zero_grad()
    finally:
        if mon is not None:
            mon.stop()
    return (time.perf_counter() - start) / (steps - WARM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--only", nargs="*", default=None, help="lightning, hf_trainer, accelerate")
    options = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    size = SIZES[options.size]
    accelerator = Accelerator(cpu=True)
    runs: dict[str, Callable[[bool, str], float]] = {
        "lightning": lambda watch, out: lightning(size, watch, out),
        "hf_trainer": lambda watch, out: hf_trainer(size, watch, out),
        "accelerate": lambda watch, out: accelerate_loop(size, watch, out, accelerator),
    }
    with tempfile.TemporaryDirectory() as out:
        for name, run in runs.items():
            if options.only and name not in options.only:
                continue
            run(False, out), run(True, out)  # warm-up
            bare, watched = [], []
            for _ in range(options.repeats):
                bare.append(run(False, out))
                watched.append(run(True, out))
            b, w = statistics.median(bare), statistics.median(watched)
            print(f"{name} ({options.size}): bare {b * 1e3:.2f} ms/step, with nanprobe {w * 1e3:.2f} ms/step, "
                  f"{w / b:.2f}x", flush=True)


if __name__ == "__main__":
    main()
