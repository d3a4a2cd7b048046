"""One process of the 2-process ``accelerate launch --cpu`` test: a NaN on rank 1 at a known step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from nanprobe.errors import NonFiniteError
from nanprobe.integrations.accelerate import monitor
from tests.monitoring.models import bad_batch, good_batch, make_lognet

BAD_RANK = 1
BAD_STEP = 4


def main(out: Path) -> None:
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = make_lognet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model, opt = accelerator.prepare(model, opt)
    done: list[int] = []
    error = None
    with monitor(accelerator, model, out / "bundles", optimizer=opt, run_name="acc") as mon:
        try:
            for step in range(8):
                x = bad_batch() if (rank == BAD_RANK and step == BAD_STEP) else good_batch()
                loss = model(x).pow(2).mean()
                accelerator.backward(loss)
                opt.step()
                opt.zero_grad()
                done.append(step)
        except NonFiniteError as e:
            error = str(e)
        result = {"rank": rank, "world_size": accelerator.num_processes, "done": done, "error": error,
                  "stopped_at": mon.current_step, "exchanges": mon.sync.exchanges if mon.sync else 0,
                  "optimizer": type(mon.optimizer).__name__, "wrapped": type(model).__name__,
                  "lr": [row.get("lr") for row in mon.history.tail()],
                  "failures": [f.to_dict() for f in mon.failures]}
    (out / f"result-{rank}.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":  # accelerate launch --cpu --num_processes 2 tests/integrations/accelerate_worker.py OUT
    main(Path(sys.argv[1]))
