"""Safe loading: weights_only unless --trust-pickle; a malicious checkpoint creates nothing without it."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.cli import models
from tests.cli.conftest import Files
from tests.cli.helpers import one_error_line, run_cli


def test_malicious_checkpoint_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"model_state_dict": models.CreatesFile(target)}, evil)
    for command in (["trace", evil], ["scan", evil], ["trace", evil, "--model", "tests.cli.models:make_broken"]):
        r = run_cli(*command)
        assert r.code == 2
        line = one_error_line(r)
        assert "refused to unpickle" in line
        assert "arbitrary code" in line
        assert "rerun with --trust-pickle if you trust the file" in line
        assert not target.exists()


def test_malicious_checkpoint_runs_its_code_with_trust_pickle(tmp_path: Path) -> None:
    # The control experiment: the file really is malicious, so the refusal above is what protects.
    target = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save(models.CreatesFile(target), evil)
    r = run_cli("scan", evil, "--trust-pickle")
    assert target.exists()
    assert r.code == 0


def test_whole_module_needs_trust_pickle(files: Files) -> None:
    r = run_cli("trace", files.pickled, "--batches", files.batches)
    assert r.code == 2
    line = one_error_line(r)
    assert "refused to unpickle" in line and "tests.cli.models.Broken" in line


def test_model_flag_with_whole_module_is_rejected(files: Files) -> None:
    r = run_cli("trace", files.pickled, "--trust-pickle", "--model", "tests.cli.models:make_broken",
                "--batches", files.batches)
    assert r.code == 2
    assert "--model is not needed" in one_error_line(r)


def test_pickled_batches_need_trust_pickle(files: Files, tmp_path: Path) -> None:
    from nanprobe.batches import ModelCall

    path = tmp_path / "calls.pt"
    torch.save([ModelCall(args=(torch.ones(2, 4),))], path)
    r = run_cli("trace", files.ours, "--batches", path)
    assert r.code == 2
    assert "refused to unpickle batches file" in one_error_line(r)
