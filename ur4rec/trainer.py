"""The four-stage trainer: pretrain_sasrec, pretrain_retriever, joint_finetune, end_to_end.

Every stage trains next-item prediction at every position of the users' training sequences (one sampled
negative per position, BCE or BPR), with AdamW, linear warmup + cosine decay, gradient clipping, and early
stopping on validation ndcg@10 (patience counted in evaluations). Each stage ends on its best weights.
``best.pt`` holds the best fused model (joint_finetune / end_to_end), ``last.pt`` the latest state (resume).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nanprobe import NonFiniteError

from .callbacks import Callback, CallbackList
from .config import STAGES, ConfigError, RunConfig
from .data.preprocess import SequenceData
from .distributed import Dist, all_reduce_grads, merge_results
from .evaluate import build_eval_set, evaluate, evaluate_full_ranking, evaluate_popularity, left_pad, make_batches
from .metrics import EvalResult
from .model import UR4RecV2MoE, build_model
from .pipeline import data_kwargs, load_data, model_config_for, text_embeddings
from .text import save_texts

__all__ = ["STAGE_EXPERT", "Trainer", "TrainerState"]

log = logging.getLogger(__name__)

STAGE_EXPERT: dict[str, str | None] = {"pretrain_sasrec": "sequence", "pretrain_retriever": "text",
                                       "joint_finetune": None, "end_to_end": None}
STAGE_PARAMS: dict[str, tuple[str, ...]] = {"pretrain_sasrec": ("sasrec.",), "pretrain_retriever": ("retriever.",),
                                            "joint_finetune": ("moe.",), "end_to_end": ("",)}
Batch = dict[str, torch.Tensor]


class TrainSequences:
    """Left-padded training inputs / next-item targets per user, and negative sampling outside the history."""

    def __init__(self, data: SequenceData, max_seq_len: int) -> None:
        users = data.users
        self.user_ids = torch.tensor(users, dtype=torch.long)
        inputs, pos = [], []
        for u in users:
            s = data.train_sequence(u)[-(max_seq_len + 1) :]
            inputs.append(left_pad(s[:-1], max_seq_len))
            pos.append(left_pad(s[1:], max_seq_len))
        self.inputs = torch.tensor(inputs, dtype=torch.long)
        self.pos = torch.tensor(pos, dtype=torch.long)
        self.num_items = data.num_items
        self.history = torch.zeros(data.num_users + 1, data.num_items + 1, dtype=torch.bool)
        for u, seq in data.sequences.items():
            self.history[u, torch.tensor(seq)] = True

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def negatives(self, user_ids: torch.Tensor, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
        neg = torch.randint(1, self.num_items + 1, shape, generator=gen)
        for _ in range(4):
            bad = self.history[user_ids[:, None].expand(shape), neg]
            if not bad.any():
                break
            neg[bad] = torch.randint(1, self.num_items + 1, (int(bad.sum()),), generator=gen)
        return neg

    def batches(self, epoch: int, seed: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self), generator=gen)
        per_rank = math.ceil(len(self) / world)
        perm = torch.cat([perm, perm[: per_rank * world - len(self)]])[rank::world]  # equal shards
        neg_gen = torch.Generator().manual_seed(seed * 7_919 + epoch * 31 + rank)
        local_bs = max(1, math.ceil(batch_size / world))
        for start in range(0, per_rank, local_bs):
            idx = perm[start : start + local_bs]
            users = self.user_ids[idx]
            pos = self.pos[idx]
            neg = self.negatives(users, tuple(pos.shape), neg_gen) * (pos != 0)
            yield {"input_ids": self.inputs[idx], "user_ids": users, "pos": pos, "neg": neg}


@dataclass
class TrainerState:
    stage_index: int = 0
    epoch: int = 0  # epochs completed in the current stage
    global_step: int = 0
    best_metric: float = -1.0  # best val ndcg@10 in the current stage
    bad_evals: int = 0
    best_fused: float = -1.0  # best val ndcg@10 of the fused model over all stages (best.pt)
    history: list[dict[str, Any]] = field(default_factory=list)


def _loss(pos: torch.Tensor, neg: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "bpr":
        return -F.logsigmoid(pos - neg).mean()
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg)).mean()


class Trainer:
    def __init__(self, cfg: RunConfig, output_dir: str | Path, *, callbacks: list[Callback] | None = None,
                 progress: bool = True, dist: Dist | None = None, model: UR4RecV2MoE | None = None,
                 console: Console | None = None) -> None:
        """``callbacks``: everything that watches the run (e.g. nanprobe's monitor,
        :class:`ur4rec.nanprobe_callback.NanprobeCallback`); the trainer adds none of its own.
        ``model``: use this model instead of ``build_model(config)`` (e.g. one built by hand, as the
        original team did); its sizes must match the data. The trainer fills its text embeddings."""
        self.cfg, self.out = cfg, Path(output_dir)
        self.callbacks = CallbackList(callbacks)
        self.eval_split: str | None = None
        self.dist = dist or Dist()
        self.show_progress = progress and self.dist.is_main
        self.console = console  # share it with the log handler so logs print above the bars
        self.data = load_data(cfg.data)
        model_cfg = model_config_for(cfg, self.data)
        torch.manual_seed(cfg.train.seed)
        if model is None:
            model = build_model(model_cfg)
        elif (model.config.num_items, model.config.num_users) != (self.data.num_items, self.data.num_users):
            raise ConfigError(f"the given model is sized for {model.config.num_items} items / "
                              f"{model.config.num_users} users; the data has {self.data.num_items} / "
                              f"{self.data.num_users}")
        self.model: UR4RecV2MoE = model
        item_t, user_t, item_txt, user_txt = text_embeddings(self.data, cfg.data.text_encoder,
                                                             self.model.config.text_dim)
        self.model.retriever.set_text_embeddings(item_t, user_t)
        self.dist.broadcast_params(self.model)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_texts(self.out / "text", item_txt, user_txt)
        L = self.model.config.max_seq_len
        self.train_seqs = TrainSequences(self.data, L)
        d = cfg.data
        self.eval_sets = {s: build_eval_set(self.data, s, L, d.num_negatives, d.eval_seed) for s in ("val", "test")}
        self.popularity = self.data.train_popularity()
        self.state = TrainerState()
        self.optimizer: torch.optim.Optimizer | None = None
        self.stage: str | None = None
        self._stage_best: dict[str, torch.Tensor] | None = None
        self._resume_optimizer: dict[str, Any] | None = None

    # ---- checkpoints -------------------------------------------------------------------------------------
    def data_spec(self, split: str = "test", batch_size: int | None = None) -> dict[str, Any]:
        kwargs = {**data_kwargs(self.cfg.data), "split": split,
                  "batch_size": int(batch_size or self.cfg.train.eval_batch_size), "max_batches": None,
                  "max_seq_len": self.model.config.max_seq_len, "num_negatives": self.cfg.data.num_negatives,
                  "eval_seed": self.cfg.data.eval_seed}
        return {"factory": "ur4rec.probe_data:eval_batches", "kwargs": kwargs}

    def checkpoint(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "model_state_dict": self.model.state_dict(),
            "config": self.model.config.to_dict(),
            "nanprobe": {"format": 1, "factory": "ur4rec.model:build_model", "data": self.data_spec(),
                         "mode": "eval", "run_config": copy.deepcopy(self.cfg.raw)},
            "optimizer_state_dict": self.optimizer.state_dict() if self.optimizer is not None else None,
            "epoch": self.state.epoch, "stage": self.stage, "metrics": dict(metrics or {}),
            "trainer_state": asdict(self.state),
        }

    def _save(self, obj: dict[str, Any], name: str) -> None:
        if not self.dist.is_main:
            return
        tmp = self.out / (name + ".tmp")
        torch.save(obj, tmp)
        tmp.replace(self.out / name)

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            log.info("no %s to resume from; starting fresh", path)
            return
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(ckpt["model_state_dict"])
        self.state = TrainerState(**ckpt["trainer_state"])
        self._resume_optimizer = ckpt.get("optimizer_state_dict")
        sb = self.out / "stage_best.pt"
        if sb.is_file():
            obj = torch.load(sb, map_location="cpu", weights_only=True)
            if obj.get("stage_index") == self.state.stage_index:
                self._stage_best = obj["model_state_dict"]
        log.info("resumed from %s at stage %d epoch %d", path, self.state.stage_index, self.state.epoch)

    # ---- evaluation --------------------------------------------------------------------------------------
    def evaluate_split(self, split: str, expert: str | None = None, with_baseline: bool = True) -> EvalResult:
        full = self.eval_sets[split]
        batches = make_batches(full.shard(self.dist.rank, self.dist.world), self.cfg.train.eval_batch_size)

        def hook(i: int, b: Batch, s: torch.Tensor, f: torch.Tensor) -> None:
            self.callbacks.on_eval_batch(self, split, i, b, s, f)

        self.eval_split = split
        with self.callbacks.context(self, "eval"):
            result = evaluate(self.model, batches, name="model" if expert is None else expert, expert=expert,
                              on_eval_batch=hook)
        result = merge_results(result, self.dist.world)
        if with_baseline:
            result.baseline = evaluate_popularity(self.popularity, make_batches(full, self.cfg.train.eval_batch_size))
        self.callbacks.on_eval_end(self, split, result)
        return result

    # ---- training ----------------------------------------------------------------------------------------
    def _set_trainable(self, stage: str) -> list[torch.nn.Parameter]:
        prefixes = STAGE_PARAMS[stage]
        params = []
        for name, p in self.model.named_parameters():
            p.requires_grad_(any(name.startswith(pre) for pre in prefixes))
            if p.requires_grad:
                params.append(p)
        return params

    def _run_stage(self, stage: str, progress: Progress) -> None:
        tc = self.cfg.train
        sc = tc.stage(stage)
        expert = STAGE_EXPERT[stage]
        params = self._set_trainable(stage)
        self.optimizer = torch.optim.AdamW(params, lr=sc.lr, weight_decay=tc.weight_decay)
        if self._resume_optimizer is not None and self.state.epoch > 0:
            self.optimizer.load_state_dict(self._resume_optimizer)
        self._resume_optimizer = None
        steps_per_epoch = math.ceil(math.ceil(len(self.train_seqs) / self.dist.world)
                                    / max(1, math.ceil(tc.train_batch_size / self.dist.world)))
        total = max(1, sc.epochs * steps_per_epoch)
        warmup = max(1, int(tc.warmup_ratio * total))

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        offset = self.state.epoch * steps_per_epoch  # resuming mid-stage continues the schedule
        sched = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step + offset))
        self.callbacks.on_stage_start(self, stage)
        task = progress.add_task(stage, total=sc.epochs, completed=self.state.epoch, info="")
        while self.state.epoch < sc.epochs:
            epoch = self.state.epoch
            self.model.train()
            losses = []
            with self.callbacks.context(self, "train"):
                for batch in self.train_seqs.batches(epoch + 1000 * self.state.stage_index, tc.seed,
                                                     tc.train_batch_size, self.dist.rank, self.dist.world):
                    pos_l, neg_l = self.model.train_logits(batch["input_ids"], batch["user_ids"], batch["pos"],
                                                           batch["neg"], expert)
                    mask = batch["pos"] != 0
                    loss = _loss(pos_l[mask], neg_l[mask], tc.loss)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    all_reduce_grads(params, self.dist.world)
                    if tc.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                    self.optimizer.step()
                    sched.step()
                    self.state.global_step += 1
                    self.callbacks.on_train_step(self, stage, self.state.global_step, batch, loss.detach())
                    losses.append(loss.detach())
            mean_loss = float(torch.stack(losses).mean()) if losses else math.nan
            if not math.isfinite(mean_loss):
                raise NonFiniteError(f"{stage}: non-finite training loss at epoch {epoch}")
            self.state.epoch += 1
            stop = self._maybe_evaluate(stage, expert, mean_loss, progress, task)
            progress.update(task, completed=self.state.epoch)
            if stop:
                log.info("%s: early stop at epoch %d (best val ndcg@10 %.4f)", stage, self.state.epoch,
                         self.state.best_metric)
                break
        if self._stage_best is not None:
            self.model.load_state_dict(self._stage_best)
        self.callbacks.on_stage_end(self, stage, self.state.best_metric)
        log.info("%s done: best val ndcg@10 %.4f", stage, self.state.best_metric)

    def _maybe_evaluate(self, stage: str, expert: str | None, mean_loss: float, progress: Progress,
                        task: Any) -> bool:
        tc, sc = self.cfg.train, self.cfg.train.stage(stage)
        if self.state.epoch % max(1, tc.eval_every) and self.state.epoch != sc.epochs:
            return False
        val = self.evaluate_split("val", expert, with_baseline=False)
        ndcg = val.metrics["ndcg@10"]
        entry = {"stage": stage, "epoch": self.state.epoch, "loss": mean_loss, "val_ndcg@10": ndcg,
                 "val_hit@10": val.metrics["hit@10"], "val_nonfinite_samples": val.nonfinite_samples}
        self.state.history.append(entry)
        log.info("%s epoch %d loss %.4f val ndcg@10 %.4f hit@10 %.4f (%s)", stage, self.state.epoch, mean_loss,
                 ndcg, val.metrics["hit@10"], val.summary_line())
        progress.update(task, info=f"loss {mean_loss:.3f} val ndcg@10 {ndcg:.3f}")
        if ndcg > self.state.best_metric:
            self.state.best_metric, self.state.bad_evals = ndcg, 0
            self._stage_best = copy.deepcopy(self.model.state_dict())
            self._save({"stage_index": self.state.stage_index, "model_state_dict": self._stage_best}, "stage_best.pt")
            if expert is None and ndcg > self.state.best_fused:
                self.state.best_fused = ndcg
                self._save(self.checkpoint({"val": val.to_dict()}), "best.pt")
        else:
            self.state.bad_evals += 1
        self._save(self.checkpoint({"val": val.to_dict()}), "last.pt")
        return self.state.bad_evals >= tc.patience

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Run the stages with epochs > 0, then evaluate the best model on test. Returns the metrics dict."""
        if resume:
            self._resume()
        t0 = time.perf_counter()
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), disable=not self.show_progress,
                            console=self.console)
        with progress:
            for index, stage in enumerate(STAGES):
                if index < self.state.stage_index or self.cfg.train.stage(stage).epochs <= 0:
                    continue
                if index > self.state.stage_index:
                    self.state.stage_index, self.state.epoch = index, 0
                    self.state.best_metric, self.state.bad_evals = -1.0, 0
                    self._stage_best = None
                self.stage = stage
                self._run_stage(stage, progress)
        train_seconds = time.perf_counter() - t0
        best = self.out / "best.pt"
        self.dist.barrier()  # rank 0 may still be writing best.pt
        if best.is_file():
            self.model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model_state_dict"])
        metrics = self.final_metrics()
        metrics["train_seconds"] = train_seconds
        self.callbacks.on_fit_end(self, metrics)
        self._save(self.checkpoint(metrics), "best.pt")
        if self.dist.is_main:
            (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        self.dist.barrier()
        return metrics

    def final_metrics(self) -> dict[str, Any]:
        val = self.evaluate_split("val")
        test = self.evaluate_split("test")
        out: dict[str, Any] = {"val": val.to_dict(), "test": test.to_dict(), "history": self.state.history,
                               "data": {"name": self.data.name, **self.data.summary()}}
        assert test.baseline is not None
        out["test_improvement"] = {
            k: (test.metrics[k] / test.baseline.metrics[k] - 1.0) if test.baseline.metrics[k] > 0 else math.inf
            for k in ("hit@10", "ndcg@10", "hit@5", "ndcg@5")
        }
        if self.cfg.train.full_ranking:
            shard = self.eval_sets["test"].shard(self.dist.rank, self.dist.world)
            model_full, pop_full = evaluate_full_ranking(self.model, self.data, shard,
                                                         self.cfg.train.eval_batch_size, self.popularity)
            model_full = merge_results(model_full, self.dist.world)
            assert pop_full is not None
            model_full.baseline = merge_results(pop_full, self.dist.world)
            out["test_full_ranking"] = model_full.to_dict()
        log.info("%s", test.summary_line())
        log.info("test model: %s", json.dumps({k: round(v, 4) for k, v in test.metrics.items()}))
        log.info("test most-popular: %s", json.dumps({k: round(v, 4) for k, v in test.baseline.metrics.items()}))
        return out
