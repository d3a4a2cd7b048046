"""How long does a failing step hold up the user's loop under ``monitor(..., on_nonfinite="dump")``?

Times the one forward call that goes non-finite (the monitor diagnoses it and writes a bundle inside that call)
against the same call bare, and checks whether the user's ``loss.backward()`` after it still works:

* ur4rec's eval call with the original masking (batch 64, MovieLens-100k shapes; NaN in eval under no_grad);
* a Hugging Face ``BertForMaskedLM`` (4 layers, 256 wide, 30522 tokens, batch 8 x 128) in a training step
  with one NaN in ``inputs_embeds`` (the case where 0.1's restore broke the user's backward).

Only APIs that every nanprobe version has are used, so the same script measures an older checkout:

    PYTHONPATH=/path/to/checkout python benchmarks/failure_step.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ur4rec() -> tuple[torch.nn.Module, Callable[[], Any], bool]:
    from benchmarks.ur4rec_adapter import CANDIDATES, ITEMS, USERS, _histories
    from ur4rec.model import build_model

    torch.manual_seed(0)
    model = build_model(num_items=ITEMS, num_users=USERS, attention_mask_style="original").eval()
    text_dim = model.config.text_dim
    model.retriever.set_text_embeddings(torch.randn(ITEMS + 1, text_dim), torch.randn(USERS + 1, text_dim))
    data = {"input_ids": _histories(64), "candidates": torch.randint(1, ITEMS + 1, (64, CANDIDATES)),
            "user_ids": torch.randint(1, USERS + 1, (64,))}
    return model, lambda: model(**data), False


def _bert() -> tuple[torch.nn.Module, Callable[[], Any], bool]:
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=1024)
    model = transformers.BertForMaskedLM(config).train()
    embeds = torch.randn(8, 128, 256)
    embeds[3, 5, 7] = float("nan")
    labels = torch.randint(0, config.vocab_size, (8, 128))
    return model, lambda: model(inputs_embeds=embeds, labels=labels), True


CASES = {"ur4rec_eval": _ur4rec, "bert_train": _bert}


def measure(name: str, repeats: int) -> dict[str, Any]:
    import nanprobe

    model, call, train = CASES[name]()
    grad = torch.enable_grad() if train else torch.no_grad()
    bare = []
    with grad:
        for _ in range(repeats):
            start = time.perf_counter()
            out = call()
            bare.append(time.perf_counter() - start)
            del out
    with tempfile.TemporaryDirectory() as out_dir, warnings.catch_warnings(), grad:
        warnings.simplefilter("ignore")
        with nanprobe.monitor(model, out_dir=out_dir, on_nonfinite="dump") as mon:
            start = time.perf_counter()
            out = call()
            failing = time.perf_counter() - start
            backward = "n/a (eval)"
            if train:
                try:
                    out.loss.backward()
                    backward = "ok"
                except RuntimeError as e:
                    backward = f"raised: {str(e).splitlines()[0][:90]}"
            bundles = len(mon.bundles)
    return {"case": name, "bare_forward_s": statistics.median(bare), "failing_step_s": failing,
            "ratio": failing / statistics.median(bare), "bundles": bundles, "user_backward": backward,
            "nanprobe": nanprobe.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [measure(name, args.repeats) for name in args.cases]
    for r in rows:
        print(f"{r['case']:12s} bare {r['bare_forward_s']:.3f} s   failing step {r['failing_step_s']:.2f} s "
              f"({r['ratio']:.1f}x)   backward after it: {r['user_backward']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                               "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
