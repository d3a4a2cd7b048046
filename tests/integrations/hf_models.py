"""A tiny BERT, a tiny GPT-2 and ordered streams of batches for the Hugging Face Trainer tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import transformers
from torch.utils.data import IterableDataset

BATCH = 4
BAD_ROW = 2
LR = 1e-3


def tiny_bert() -> transformers.BertForMaskedLM:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    return transformers.BertForMaskedLM(config)


def tiny_gpt2() -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


class Tokens(IterableDataset):
    """``rows`` random sequences of 16 tokens, each its own labels (causal language modelling)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(self.rows):
            ids = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(i))
            yield {"input_ids": ids, "labels": ids}


class Stream(IterableDataset):
    """Rows in a fixed order (the Trainer shuffles a map-style dataset); at ``bad_step`` row 2's embeddings
    hold 3e38, which overflows the embeddings' LayerNorm (variance -> inf -> NaN)."""

    def __init__(self, steps: int, bad_step: int | None = None) -> None:
        self.steps = steps
        self.bad = bad_step * BATCH + BAD_ROW if bad_step is not None else None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(self.steps * BATCH):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(6, 16, generator=g)
            if i == self.bad:
                x[1] = 3e38
            yield {"inputs_embeds": x, "labels": torch.randint(0, 32, (6,), generator=g)}


def trainer(model: Any, callbacks: list[Any], steps: int, out: str, *, bad_step: int | None = None,
            accumulation: int = 1, learning_rate: float = LR, data: IterableDataset | None = None,
            **kwargs: Any) -> transformers.Trainer:
    """``data``: the rows to train on (default: :class:`Stream`, with its bad row at ``bad_step``)."""
    args = transformers.TrainingArguments(
        output_dir=out, per_device_train_batch_size=BATCH, max_steps=steps, logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, learning_rate=learning_rate, disable_tqdm=True, dataloader_num_workers=0,
        gradient_accumulation_steps=accumulation, seed=0, **kwargs)
    if data is None:
        data = Stream(steps * accumulation, bad_step * accumulation if bad_step is not None else None)
    return transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
