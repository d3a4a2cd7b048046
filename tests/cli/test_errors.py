"""Every input error of the issue: one line on stderr naming the problem and what to do, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.cli import models
from tests.cli.conftest import FACTORY, Files
from tests.cli.helpers import one_error_line, run_cli


def test_missing_file(tmp_path: Path) -> None:
    r = run_cli("trace", tmp_path / "nope.pt")
    assert r.code == 2
    assert "does not exist" in one_error_line(r)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    r = run_cli("trace", tmp_path)
    assert r.code == 2
    assert "is a directory" in one_error_line(r)


def test_not_a_torch_file(files: Files) -> None:
    r = run_cli("trace", files.text)
    assert r.code == 2
    assert "not a PyTorch file" in one_error_line(r)


def test_empty_file(files: Files) -> None:
    r = run_cli("trace", files.empty)
    assert r.code == 2
    assert "is empty" in one_error_line(r)


def test_truncated_file(files: Files) -> None:
    r = run_cli("trace", files.truncated, "--model", FACTORY)
    assert r.code == 2
    assert "truncated or corrupt" in one_error_line(r)


def test_corrupt_bytes_inside_the_file(files: Files, tmp_path: Path) -> None:
    data = bytearray(files.generic.read_bytes())
    for i in range(200, 260):
        data[i] ^= 0xFF
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    r = run_cli("trace", damaged, "--model", FACTORY)
    assert r.code == 2
    assert "is truncated or corrupt (torch.load: " in one_error_line(r)


def test_truncated_legacy_format(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.pt"
    torch.save({"state_dict": models.make_broken().state_dict()}, legacy, _use_new_zipfile_serialization=False)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(legacy.read_bytes()[:100])
    r = run_cli("trace", cut, "--model", FACTORY)
    assert r.code == 2
    assert "truncated" in one_error_line(r)


def test_state_dict_needs_model_flag(files: Files) -> None:
    r = run_cli("trace", files.generic, "--batches", files.batches)
    assert r.code == 2
    line = one_error_line(r)
    assert "pass --model MODULE:CALLABLE" in line and "state_dict" in line


@pytest.mark.parametrize(("spec", "expected"), [
    ("no_such_pkg.models:build", "cannot import model factory module 'no_such_pkg.models'"),
    ("tests.cli.models:nope", "has no attribute 'nope'"),
    ("tests.cli.models:NOT_CALLABLE", "names a int, not a callable"),
    ("tests.cli.models", "is not MODULE:CALLABLE"),
    ("tests.cli.models:make_raising", "raised RuntimeError when called"),
    ("tests.cli.models:make_not_a_module", "returned a int, not an nn.Module"),
])
def test_bad_factory(files: Files, spec: str, expected: str) -> None:
    r = run_cli("trace", files.generic, "--model", spec, "--batches", files.batches)
    assert r.code == 2
    assert expected in one_error_line(r)


def test_state_dict_missing_and_unexpected_keys_listed(files: Files, tmp_path: Path) -> None:
    state = models.make_broken().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc2.bias"]
    path = tmp_path / "mismatch.pt"
    torch.save({"model_state_dict": state}, path)
    r = run_cli("trace", path, "--model", FACTORY, "--batches", files.batches)
    assert r.code == 2
    line = one_error_line(r)
    assert "missing keys [fc2.bias]" in line
    assert "unexpected keys [extra.weight]" in line


def test_factory_rejects_the_checkpoint_config(files: Files) -> None:
    # The checkpoint's config has `hidden`, which make_masked does not take.
    r = run_cli("trace", files.generic, "--model", "tests.cli.models:make_masked", "--batches", files.batches)
    assert r.code == 2
    line = one_error_line(r)
    assert "raised TypeError when called with ['dim', 'hidden']" in line
    assert "unexpected keyword argument 'hidden'" in line


def test_size_mismatch_names_the_tensor(tmp_path: Path, files: Files) -> None:
    path = tmp_path / "wide.pt"
    torch.save({"state_dict": models.make_broken(hidden=16).state_dict()}, path)
    r = run_cli("trace", path, "--model", FACTORY, "--batches", files.batches)
    assert r.code == 2
    assert "size mismatch for fc1.weight" in one_error_line(r)


def test_batches_do_not_fit_forward(files: Files, tmp_path: Path) -> None:
    wrong = tmp_path / "pairs.pt"
    torch.save([(torch.ones(2, 4), torch.ones(2, 4))], wrong)
    r = run_cli("trace", files.generic, "--model", FACTORY, "--batches", wrong)
    assert r.code == 2
    line = one_error_line(r)
    assert "batch 0 (a tuple of 2) does not fit Broken.forward(x" in line
    assert "too many positional arguments" in line


def test_dict_batch_with_wrong_key(files: Files, tmp_path: Path) -> None:
    wrong = tmp_path / "dict.pt"
    torch.save([{"inputs": torch.ones(2, 4)}], wrong)
    r = run_cli("trace", files.generic, "--model", FACTORY, "--batches", wrong)
    assert r.code == 2
    line = one_error_line(r)
    assert "batch 0 (a dict with keys ['inputs']) does not fit Broken.forward(x)" in line
    assert "missing a required argument: 'x'" in line


def test_empty_batch_list(files: Files) -> None:
    r = run_cli("trace", files.generic, "--model", FACTORY, "--batches", files.empty_batches)
    assert r.code == 2
    assert "empty list of batches" in one_error_line(r)


def test_data_factory_without_batches(files: Files) -> None:
    r = run_cli("trace", files.generic, "--model", FACTORY, "--data", "tests.cli.models:no_batches")
    assert r.code == 2
    assert "produced no batches" in one_error_line(r)


def test_no_batches_anywhere(files: Files) -> None:
    r = run_cli("trace", files.generic, "--model", FACTORY)
    assert r.code == 2
    assert "no batches to run: pass --batches FILE or --data" in one_error_line(r)


def test_batches_file_not_a_list(files: Files, tmp_path: Path) -> None:
    weird = tmp_path / "weird.pt"
    torch.save(3, weird)
    r = run_cli("trace", files.generic, "--model", FACTORY, "--batches", weird)
    assert r.code == 2
    assert "holds a int; expected a list of batches" in one_error_line(r)


@pytest.mark.parametrize("mode", ["Eval", "training", ""])
def test_unknown_mode(files: Files, mode: str) -> None:
    r = run_cli("trace", files.ours, "--mode", mode)
    assert r.code == 2
    assert "invalid choice" in one_error_line(r)


@pytest.mark.parametrize(("device", "expected"), [
    ("tpu9", "unknown device 'tpu9'"),
    ("cuda:7" if not torch.cuda.is_available() else "cuda:99", "cuda"),
])
def test_unknown_or_unavailable_device(files: Files, device: str, expected: str) -> None:
    r = run_cli("trace", files.ours, "--device", device)
    assert r.code == 2
    assert expected in one_error_line(r)


def test_unknown_flag_and_missing_argument() -> None:
    r = run_cli("trace", "--frobnicate")
    assert r.code == 2
    assert "nanprobe trace --help" in one_error_line(r)
    r = run_cli("scan")
    assert r.code == 2
    assert "CHECKPOINT" in one_error_line(r)


def test_unknown_command() -> None:
    r = run_cli("explode")
    assert r.code == 2
    assert "invalid choice: 'explode'" in one_error_line(r)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    r = run_cli("trace", tmp_path / "nope.pt", "--debug")
    assert r.code == 2
    assert "Traceback (most recent call last)" in r.err
    assert "InputError" in r.err
    assert r.err.rstrip().splitlines()[-1].startswith("nanprobe: error: ")


def test_global_debug_before_the_command(tmp_path: Path) -> None:
    r = run_cli("--debug", "scan", tmp_path / "nope.pt")
    assert r.code == 2
    assert "Traceback" in r.err


def test_json_may_not_overwrite_an_input(files: Files) -> None:
    before = files.ours.read_bytes()
    r = run_cli("trace", files.ours, "--json", files.ours)
    assert r.code == 2
    assert "is one of the input files" in one_error_line(r)
    assert files.ours.read_bytes() == before


def test_json_into_missing_directory(files: Files) -> None:
    r = run_cli("trace", files.ours, "--json", files.root / "no" / "such" / "report.json")
    assert r.code == 2
    assert "does not exist" in one_error_line(r)


def test_config_file_errors(files: Files, tmp_path: Path) -> None:
    bad = tmp_path / "run.yaml"
    bad.write_text("model: [unclosed\n")
    r = run_cli("trace", files.ours, "--config", bad)
    assert r.code == 2
    assert "is not valid YAML" in one_error_line(r)
    scalar = tmp_path / "run.json"
    scalar.write_text("3")
    r = run_cli("trace", files.ours, "--config", scalar)
    assert r.code == 2
    assert "expected a mapping" in one_error_line(r)


def test_keyboard_interrupt_exits_130(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    import nanprobe.loading

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(nanprobe.loading, "load_checkpoint", interrupted)
    r = run_cli("trace", files.ours)
    assert r.code == 130
    assert "interrupted" in r.err


def test_internal_error_is_not_exit_1_or_2(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    import nanprobe.scan

    def bug(obj: object) -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(nanprobe.scan, "scan_checkpoint", bug)
    r = run_cli("scan", files.ours)
    assert r.code == 3
    assert "internal error: ZeroDivisionError: oops" in one_error_line(r)


def test_inputs_are_never_written(files: Files) -> None:
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (files.generic, files.batches)}
    run_cli("trace", files.generic, "--model", FACTORY, "--batches", files.batches, "--no-replay")
    run_cli("scan", files.generic)
    for p, (mtime, data) in stamps.items():
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data


def test_newer_checkpoint_format(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({"model_state_dict": models.make_broken().state_dict(),
                "nanprobe": {"format": 2, "factory": FACTORY}}, path)
    r = run_cli("trace", path)
    assert r.code == 2
    assert "format 2, newer than the 1 this nanprobe reads; upgrade nanprobe" in one_error_line(r)


def test_ddp_prefix_is_stripped(tmp_path: Path, files: Files) -> None:
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in models.make_broken().state_dict().items()}}, path)
    r = run_cli("trace", path, "--model", FACTORY, "--batches", files.clean_batches, "--no-replay")
    assert r.code == 0, r.err
