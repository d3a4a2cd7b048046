"""What CHECKPOINT may be besides a torch file (folders, .safetensors, shard indexes) without transformers, the
one-line errors for each, and trusted pickles whose classes live in the current directory."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from nanprobe.errors import InputError
from nanprobe.loading import load_checkpoint, read_torch_file
from tests.cli import models
from tests.cli.conftest import CONFIG, FACTORY, Files
from tests.cli.helpers import one_error_line, run_cli

# ------------------------------------------------------------------------------------------------- folders


def test_folder_with_neither_config_nor_weights(tmp_path: Path) -> None:
    (tmp_path / "run1.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    r = run_cli("trace", tmp_path)
    assert r.code == 2
    line = one_error_line(r)
    assert "is a directory with no config.json and no weights" in line
    assert "(it holds run1.pt)" in line and "save_pretrained folder" in line


def test_folder_with_config_but_no_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    for command in ("trace", "scan"):
        r = run_cli(command, tmp_path)
        assert r.code == 2
        assert "has a config.json but no weights" in one_error_line(r)


def test_config_beside_a_torch_file_is_not_used(files: Files) -> None:
    # Only save_pretrained weights take the config.json beside them; a torch file keeps its own config.
    (files.root / "config.json").write_text(json.dumps({"unrelated": True}))
    loaded = load_checkpoint(files.generic, model_spec=FACTORY)
    assert loaded.config == CONFIG and loaded.format == "torch"


# ----------------------------------------------------------------------------------------------- safetensors

needs_safetensors = pytest.mark.skipif(importlib.util.find_spec("safetensors") is None,
                                       reason="safetensors is not installed")


def _broken_safetensors(folder: Path, config: dict | None) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(exist_ok=True)
    path = folder / "model.safetensors"
    save_file(models.make_broken(**CONFIG).state_dict(), path)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return path


@needs_safetensors
def test_safetensors_with_a_plain_factory(files: Files, tmp_path: Path) -> None:
    path = _broken_safetensors(tmp_path / "m", config=None)
    out = tmp_path / "r.json"
    r = run_cli("trace", path, "--model", FACTORY, "--batches", files.batches, "--json", out, "--no-replay")
    assert r.code == 1, r.err
    assert "safetensors state dict + --model" in r.err
    assert json.loads(out.read_text())["first_nonfinite"]["module"] == "norm"


@needs_safetensors
def test_folder_config_json_goes_to_a_plain_factory(files: Files, tmp_path: Path) -> None:
    path = _broken_safetensors(tmp_path / "m", config=CONFIG)
    for target in (path, path.parent):
        loaded = load_checkpoint(target, model_spec=FACTORY)
        assert loaded.config == CONFIG and loaded.mapped and loaded.kind == "state_dict"
        assert torch.equal(loaded.model.fc1.weight, models.make_broken(**CONFIG).fc1.weight)


@needs_safetensors
def test_safetensors_without_config_or_model(files: Files, tmp_path: Path) -> None:
    path = _broken_safetensors(tmp_path / "m", config=None)
    for target in (path, path.parent):
        r = run_cli("trace", target, "--batches", files.batches)
        assert r.code == 2
        line = one_error_line(r)
        assert "holds safetensors weights with no config.json beside them" in line
        assert "pass --model MODULE:CALLABLE" in line


@needs_safetensors
def test_config_json_without_model_type(files: Files, tmp_path: Path) -> None:
    path = _broken_safetensors(tmp_path / "m", config=CONFIG)
    r = run_cli("trace", path.parent, "--batches", files.batches)
    assert r.code == 2
    line = one_error_line(r)
    assert "has no model_type" in line and "pass --model MODULE:CALLABLE" in line


@needs_safetensors
def test_damaged_safetensors(tmp_path: Path) -> None:
    path = _broken_safetensors(tmp_path / "m", config=None)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size - 10])
    r = run_cli("scan", cut)
    assert r.code == 2
    assert "is truncated or corrupt" in one_error_line(r)
    text = tmp_path / "text.safetensors"
    text.write_text("not tensors at all")
    r = run_cli("scan", text)
    assert r.code == 2
    assert "is not a safetensors file" in one_error_line(r)


def test_safetensors_package_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "model.safetensors"  # written by hand: the format is a length, a JSON header, the bytes
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    r = run_cli("scan", path)
    assert r.code == 2
    assert "needs the safetensors package, which is not installed; pip install safetensors" in one_error_line(r)


def test_shard_index_with_a_missing_shard(tmp_path: Path) -> None:
    index = {"metadata": {}, "weight_map": {"fc1.weight": "model-00001-of-00002.safetensors",
                                            "fc2.weight": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    r = run_cli("scan", tmp_path)
    assert r.code == 2
    assert "shard 'model-00002-of-00002.safetensors' listed in" in one_error_line(r)


# ------------------------------------------------------------------------------------ trusted pickles, cwd

_NET = '''import torch


class CwdNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)
'''


@pytest.fixture
def pickled_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A whole module pickled by a script in tmp_path (module np_cwd_lit), then forgotten: only the current
    directory can make its class importable again. The console script has no "" (the cwd) on sys.path; nor
    does this test, whatever ran pytest."""
    (tmp_path / "np_cwd_lit.py").write_text(_NET)
    # Restored after the test, whatever loading appends to it.
    monkeypatch.setattr(sys, "path", [*(p for p in sys.path if p not in ("", ".")), str(tmp_path)])
    net = importlib.import_module("np_cwd_lit").CwdNet()
    torch.save(net, tmp_path / "net.pt")
    torch.save([torch.ones(3, 4)], tmp_path / "batches.pt")
    sys.path.remove(str(tmp_path))
    del sys.modules["np_cwd_lit"]
    importlib.invalidate_caches()
    yield tmp_path / "net.pt"
    sys.modules.pop("np_cwd_lit", None)


def test_trusted_pickle_imports_its_class_from_the_current_directory(pickled_from_cwd: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pickled_from_cwd.parent)
    assert type(read_torch_file("net.pt", trust_pickle=True)).__name__ == "CwdNet"
    r = run_cli("trace", "net.pt", "--trust-pickle", "--batches", "batches.pt", "--no-replay")
    assert r.code == 0, r.err
    assert "CwdNet from net.pt (a pickled nn.Module)" in r.err


def test_trusted_pickle_elsewhere_says_where_to_run(pickled_from_cwd: Path, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    with pytest.raises(InputError, match=r"pickles a class nanprobe cannot import \(No module named 'np_cwd_lit'\); "
                                         "run nanprobe from the directory that holds the model's code"):
        read_torch_file(pickled_from_cwd, trust_pickle=True)
