"""The body of each rank of the 2-process distributed test (imported by the spawned processes)."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nanprobe.errors import NonFiniteError
from nanprobe.monitoring import monitor
from tests.monitoring.models import bad_batch, good_batch, make_lognet

BAD_RANK = 1
FORWARD_BAD_STEP = 5
LOSS_BAD_STEP = 3


def _forward_phase(model: torch.nn.Module, out_dir: Path, rank: int) -> dict:
    """Auto steps (every model call is a step), NaN in rank 1's output at step 5, policy raise."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    done: list[int] = []
    result: dict = {"error": None}
    with monitor(model, out_dir=out_dir, run_name="fwd") as mon:
        try:
            for step in range(8):
                x = bad_batch() if (rank == BAD_RANK and step == FORWARD_BAD_STEP) else good_batch()
                loss = model(x).pow(2).mean()
                loss.backward()
                opt.step()
                opt.zero_grad()
                done.append(step)
        except NonFiniteError as e:
            result["error"] = str(e)
        result.update(done=done, stopped_at=mon.current_step, exchanges=mon.sync.exchanges if mon.sync else 0,
                      failures=[f.to_dict() for f in mon.failures])
    return result


def _loss_phase(model: torch.nn.Module, out_dir: Path, rank: int) -> dict:
    """Manual steps (mon.step()), a NaN loss on rank 1 at step 3, policy dump: everyone goes on."""
    done: list[int] = []
    with monitor(model, out_dir=out_dir, run_name="loss", on_nonfinite="dump") as mon:
        for step in range(6):
            loss = model(good_batch()).pow(2).mean()
            if rank == BAD_RANK and step == LOSS_BAD_STEP:
                loss = loss * float("nan")
            mon.check_loss(loss).backward()  # DDP all-reduces the (NaN) gradients: no hang
            model.zero_grad()
            mon.step()
            done.append(step)
        return {"done": done, "exchanges": mon.sync.exchanges if mon.sync else 0,
                "failures": [f.to_dict() for f in mon.failures]}


def _eval_phase(model: torch.nn.Module, out_dir: Path, rank: int) -> dict:
    """Uneven eval shards under no_grad (rank 1 has one more batch, and it is bad), policy dump: no collective
    per eval call, so nothing hangs; only rank 1 writes a bundle."""
    batches = [good_batch(), good_batch()] + ([bad_batch()] if rank == BAD_RANK else [])
    with monitor(model.module, out_dir=out_dir, run_name="eval", on_nonfinite="dump") as mon, torch.no_grad():
        for b in batches:
            model.module(b)
        exchanges = mon.sync.exchanges if mon.sync else 0
        return {"calls": mon.calls, "exchanges": exchanges, "failures": [f.to_dict() for f in mon.failures]}


def run(rank: int, world: int, init_file: str | None, out_dir: str) -> None:
    """One rank: file rendezvous when spawned by the test, env:// under torchrun (``init_file`` None)."""
    init = f"file://{init_file}" if init_file else "env://"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(make_lognet())
        forward = _forward_phase(model, Path(out_dir) / "forward", rank)
        dist.barrier()  # the next collective after the stop: every rank must reach it
        loss = _loss_phase(model, Path(out_dir) / "loss", rank)
        dist.barrier()
        evaluation = _eval_phase(model, Path(out_dir) / "eval", rank)
        dist.barrier()
        result = {"forward": forward, "loss": loss, "eval": evaluation}
        Path(out_dir, f"result-{rank}.json").write_text(json.dumps(result))
        del model  # DDP's reducer holds the process group: release it before the group goes
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # torchrun --standalone --nproc_per_node=2 tests/monitoring/dist_worker.py OUT_DIR
    run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), None, sys.argv[1])
