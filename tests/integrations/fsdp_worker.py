"""One rank of the 2-process FSDP2 test (torchrun, gloo on CPU): forward checks only, no diagnosis."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from nanprobe.errors import NonFiniteError
from nanprobe.monitoring import monitor
from tests.monitoring.models import bad_batch, good_batch, make_lognet

BAD_RANK = 1
BAD_STEP = 3


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = make_lognet()
        fully_shard(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        done: list[int] = []
        error = None
        # no optimizer=, no after_backward(): those signals compute on DTensor shards as plain tensors; and no
        # diagnosis: it would re-run the sharded module on one rank, whose all-gathers wait for the others
        with monitor(model, out / "bundles", run_name="fsdp", diagnose=False) as mon:
            try:
                for step in range(6):
                    x = bad_batch() if (rank == BAD_RANK and step == BAD_STEP) else good_batch()
                    model(x).pow(2).mean().backward()
                    opt.step()
                    opt.zero_grad()
                    done.append(step)
            except NonFiniteError as e:
                error = str(e)
        result = {"rank": rank, "type": type(model).__name__, "done": done, "error": error,
                  "stopped_at": mon.current_step, "exchanges": mon.sync.exchanges if mon.sync else 0,
                  "failures": [f.to_dict() for f in mon.failures]}
        (out / f"result-{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":  # torchrun --standalone --nproc_per_node=2 tests/integrations/fsdp_worker.py OUT
    assert "RANK" in os.environ
    main(Path(sys.argv[1]))
