"""Bundle contents, the atomic write and the loader's refusals."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nanprobe.errors import InputError, NonFiniteError
from nanprobe.monitoring import monitor
from nanprobe.postmortem import bundle as bundle_mod
from nanprobe.postmortem.bundle import COMPLETE, STATS_COLUMNS, load_bundle
from nanprobe.report import CONTRACT_KEYS
from nanprobe.rng import RNGState
from tests.monitoring.models import FACTORY_LOGNET, bad_batch, good_batch, make_lognet

FILES = {"report.json", "batch.pt", "rng.pt", "stats.csv", "report.md", "report.html", "env.json", "model.pt",
         "repro.txt", "manifest.json", COMPLETE}


def _fail_once(tmp_path: Path, **kwargs: object) -> tuple[Path, torch.Tensor, NonFiniteError]:
    torch.manual_seed(0)
    model = make_lognet()
    bad = bad_batch(rows=(1, 2))
    with pytest.raises(NonFiniteError) as info, monitor(model, out_dir=tmp_path, run_name="job", **kwargs) as mon:
        for step in range(4):
            out = model(bad if step == 3 else good_batch())
            mon.log(loss=out.mean(), lr=0.1)
    return tmp_path / "job-step3", bad, info.value


def test_bundle_has_every_file_and_the_contract_keys(tmp_path: Path) -> None:
    path, bad, err = _fail_once(tmp_path, factory=FACTORY_LOGNET, config={"dim": 4}, run_config={"lr": 0.1})
    assert path.is_dir() and str(path) in str(err)
    assert {p.name for p in path.iterdir()} == FILES
    assert [p.name for p in tmp_path.iterdir()] == ["job-step3"]  # no partial directory left behind

    report = json.loads((path / "report.json").read_text())
    assert set(CONTRACT_KEYS) <= set(report)
    assert {"step", "epoch", "rank", "world_size", "ranks_nonfinite", "history", "monitor"} <= set(report)
    assert report["status"] == "nonfinite"
    assert report["step"] == 3 and report["rank"] == 0 and report["ranks_nonfinite"] == [0]
    assert set(report["first_nonfinite"]) >= {"module", "module_type", "phase", "kind", "batch_index", "samples",
                                              "op", "source"}
    assert report["first_nonfinite"]["kind"] in ("nan", "inf")
    assert report["monitor"]["detected"]["samples"] == [1, 2]
    assert [h["step"] for h in report["history"]] == [0, 1, 2]  # the failing call raised before log()
    assert report["history"][0]["lr"] == 0.1

    batch = torch.load(path / "batch.pt", weights_only=True)
    assert isinstance(batch, list) and len(batch) == 1 and torch.equal(batch[0][0], bad)
    rng = RNGState.from_dict(torch.load(path / "rng.pt", weights_only=True))
    assert rng.torch_cpu.dtype == torch.uint8 and rng.torch_cpu.numel() > 0  # torch generators, per step
    ckpt = torch.load(path / "model.pt", weights_only=True)
    assert ckpt["nanprobe"]["factory"] == FACTORY_LOGNET and ckpt["config"] == {"dim": 4}
    assert ckpt["nanprobe"]["run_config"] == {"lr": 0.1} and "proj.weight" in ckpt["model_state_dict"]

    with (path / "stats.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == STATS_COLUMNS
    assert {"proj", "head"} <= {r["module"] for r in rows}

    html = (path / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count('<img alt="') == 2
    assert '<img alt="per-layer activation range" src="data:image/png;base64,iVBOR' in html
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "# nanprobe post-mortem: job step 3" in (path / "report.md").read_text()
    env = json.loads((path / "env.json").read_text())
    assert env["torch"] == torch.__version__ and "mha_fastpath" in env["flags"]
    assert (path / "repro.txt").read_text() == f"nanprobe replay {path}\n"
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == FILES - {"manifest.json", COMPLETE}

    loaded = load_bundle(path)
    assert loaded.step == 3 and loaded.mode == "train" and not loaded.backward
    assert torch.equal(loaded.batch()[0], bad)


def test_without_factory_the_module_is_pickled_and_marked(tmp_path: Path) -> None:
    path, _, _ = _fail_once(tmp_path)
    report = json.loads((path / "report.json").read_text())
    assert report["bundle"]["model"] == {"kind": "pickle", "file": "model.pt", "trust_pickle": True}
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path / "model.pt", weights_only=True)


def test_reference_and_none_write_no_model_file(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"")
    path, _, _ = _fail_once(tmp_path / "a", save_model="reference", checkpoint=ckpt)
    assert not (path / "model.pt").exists()
    report = json.loads((path / "report.json").read_text())
    assert report["bundle"]["model"] == {"kind": "reference", "checkpoint": str(ckpt.resolve())}
    path, _, _ = _fail_once(tmp_path / "b", save_model="none")
    assert not (path / "model.pt").exists()


def test_a_writer_failing_midway_leaves_no_half_bundle_only_an_incomplete_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(d: Path, c: object) -> None:
        (d / "report.html").write_text("<html><body>half")
        raise OSError("disk full")

    writers = [(n, broken if n == "report.html" else w) for n, w in bundle_mod.WRITERS]
    monkeypatch.setattr(bundle_mod, "WRITERS", writers)
    model = make_lognet()
    with pytest.raises(NonFiniteError) as info, monitor(model, out_dir=tmp_path):
        model(bad_batch())
    assert isinstance(info.value.__cause__, OSError) and "disk full" in str(info.value.__cause__)
    (only,) = list(tmp_path.iterdir())  # no hidden partial left behind
    assert sorted(p.name for p in only.iterdir()) == [COMPLETE, "manifest.json", "report.json"]
    report = load_bundle(only).report
    assert report.monitor.incomplete == "writing the bundle failed: OSError: disk full"
    assert report.first_nonfinite.module == "" and report.verdict.cause == "numerical_domain"


def test_a_crash_midway_leaves_only_a_hidden_partial_that_is_refused(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path.cwd())!r})
        from nanprobe.postmortem import bundle
        from nanprobe.monitoring import monitor
        from tests.monitoring.models import make_lognet, bad_batch
        def die(d, c):
            (d / "report.html").write_text("half")
            os._exit(7)  # no cleanup, no finally: like a SIGKILL or a power cut
        bundle.WRITERS = [(n, die if n == "report.html" else w) for n, w in bundle.WRITERS]
        model = make_lognet()
        with monitor(model, out_dir={str(tmp_path)!r}, run_name="job", diagnose=False):
            model(bad_batch())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 7, proc.stderr
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and entries[0].name.startswith(".job-step0.partial-")
    assert (entries[0] / "report.json").exists() and not (entries[0] / COMPLETE).exists()
    assert not list(tmp_path.glob("job-step*"))
    with pytest.raises(InputError, match="incomplete"):
        load_bundle(entries[0])


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),
    (lambda p: (p / "d").mkdir() or p / "d", "is not a bundle"),
])
def test_load_bundle_refuses_what_is_not_a_bundle(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_bundle(make(tmp_path))


def test_second_bundle_with_the_same_name_gets_a_suffix(tmp_path: Path) -> None:
    first, _, _ = _fail_once(tmp_path)
    _fail_once(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job-step3", "job-step3-1"]
    assert load_bundle(tmp_path / "job-step3-1").report["step"] == 3 and first.is_dir()
