"""transformers checkpoints: save_pretrained folders (sharded or not, safetensors or pytorch_model.bin), lone
.safetensors files, and --model naming a transformers class, on a tiny GPT-2 with a NaN injected in one weight."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from nanprobe.loading import load_checkpoint  # noqa: E402
from tests.cli.helpers import one_error_line, run_cli  # noqa: E402
from tests.cli.test_loading_mapped import assert_same_model  # noqa: E402

BAD_MODULE = "transformer.h.1.mlp.c_fc"
BAD_WEIGHT = f"{BAD_MODULE}.weight"


def tiny_config() -> transformers.GPT2Config:
    return transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
                                   bos_token_id=0, eos_token_id=0)


@dataclass
class HF:
    root: Path
    clean: Path  # save_pretrained folder
    bad: Path  # save_pretrained folder, NaN in BAD_WEIGHT
    bad_torch: Path  # torch.save({"model_state_dict", "config"}) of the bad model
    batches: Path  # one dict batch: model(**batch)
    model: torch.nn.Module  # the bad model


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> HF:
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(tiny_config())
    model.save_pretrained(root / "clean")
    with torch.no_grad():
        model.get_parameter(BAD_WEIGHT)[3, 5] = float("nan")
    model.save_pretrained(root / "bad")
    bad_torch = root / "bad.pt"
    torch.save({"model_state_dict": model.state_dict(), "config": model.config.to_dict()}, bad_torch)
    batches = root / "batches.pt"
    torch.save([{"input_ids": torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))}], batches)
    return HF(root=root, clean=root / "clean", bad=root / "bad", bad_torch=bad_torch, batches=batches, model=model)


def _lone(hf: HF, tmp_path: Path) -> Path:
    """The bad model.safetensors alone in a folder, no config.json."""
    lone = tmp_path / "weights.safetensors"
    shutil.copy(hf.bad / "model.safetensors", lone)
    return lone


def _trace(*argv: object, json_path: Path) -> tuple[int, dict]:
    r = run_cli("trace", *argv, "--json", json_path, "--no-replay")
    assert r.code in (0, 1), r.err
    return r.code, json.loads(json_path.read_text())


# ----------------------------------------------------------------------------------------------- loading


def test_save_pretrained_folder_loads_as_from_pretrained_does(hf: HF) -> None:
    loaded = load_checkpoint(hf.clean)
    assert loaded.kind == "transformers" and loaded.factory == "transformers:GPT2LMHeadModel"
    assert loaded.format == "safetensors" and loaded.mapped
    assert loaded.config is not None and loaded.config["n_layer"] == 2
    assert "built from its config" in loaded.describe()
    model = loaded.model
    assert model.lm_head.weight is model.transformer.wte.weight  # tied, though the file holds only wte
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf.clean)
    ids = torch.randint(0, 100, (2, 8))
    assert_same_model(model, reference)
    model.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def _sharded(hf: HF, folder: Path) -> None:
    hf.model.save_pretrained(folder, max_shard_size="40KB")
    assert (folder / "model.safetensors.index.json").exists() and not (folder / "model.safetensors").exists()


def _hub_style_bin(hf: HF, folder: Path) -> None:
    """An old hub GPT-2: pytorch_model.bin of the base model's keys (no ``transformer.`` prefix, no lm_head)
    and the causal-mask buffers ``h.N.attn.bias`` that transformers now declares harmless."""
    folder.mkdir()
    hf.model.config.save_pretrained(folder)
    state = {k.removeprefix("transformer."): v for k, v in hf.model.state_dict().items() if k != "lm_head.weight"}
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64, dtype=torch.bool))
    torch.save(state, folder / "pytorch_model.bin")


def _bin_shards(hf: HF, folder: Path) -> None:
    folder.mkdir()
    hf.model.config.save_pretrained(folder)
    state = hf.model.state_dict()
    keys = list(state)
    weight_map = {}
    for n, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"pytorch_model-0000{n + 1}-of-00002.bin"
        torch.save({k: state[k].clone() for k in part}, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("write", [_sharded, _hub_style_bin, _bin_shards], ids=["sharded", "hub-bin", "bin-shards"])
def test_other_save_pretrained_layouts(hf: HF, tmp_path: Path, write) -> None:
    folder = tmp_path / "model"
    write(hf, folder)
    loaded = load_checkpoint(folder)
    assert loaded.kind == "transformers" and loaded.mapped
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    a, b = loaded.model.state_dict(), hf.model.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k].nan_to_num(), b[k].nan_to_num()) for k in a)
    if write is _hub_style_bin:
        assert loaded.ignored_keys == ["transformer.h.0.attn.bias", "transformer.h.1.attn.bias"]


def test_lone_safetensors_uses_the_config_json_beside_it(hf: HF) -> None:
    loaded = load_checkpoint(hf.bad / "model.safetensors")
    assert loaded.kind == "transformers" and loaded.mapped
    assert torch.isnan(loaded.model.get_parameter(BAD_WEIGHT)).sum() == 1


def test_lone_safetensors_with_a_factory_from_the_current_directory(hf: HF, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    lone = _lone(hf, tmp_path)
    (tmp_path / "tiny_gpt2_factory.py").write_text(
        "import transformers\n\n\n"
        "def build():\n"
        "    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64)\n"
        "    return transformers.GPT2LMHeadModel(config)\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading appends the cwd; undone after the test
    monkeypatch.chdir(tmp_path)
    try:
        code, report = _trace(lone.name, "--model", "tiny_gpt2_factory:build", "--batches", hf.batches,
                              json_path=tmp_path / "r.json")
    finally:
        sys.modules.pop("tiny_gpt2_factory", None)
    assert code == 1 and report["first_nonfinite"]["module"] == BAD_MODULE


# ------------------------------------------------------------------------------------------------- the CLI


def test_trace_folder_finds_the_injected_nan(hf: HF, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    r = run_cli("trace", hf.bad, "--batches", hf.batches, "--json", out)
    assert r.code == 1, r.err
    assert "GPT2LMHeadModel from" in r.err and "built from its config" in r.err
    report = json.loads(out.read_text())
    assert report["first_nonfinite"]["module"] == BAD_MODULE
    assert report["nonfinite_parameters"] == [BAD_WEIGHT]
    assert report["verdict"]["cause"] == "nonfinite_parameter"


def test_trace_clean_folder_is_clean(hf: HF, tmp_path: Path) -> None:
    code, report = _trace(hf.clean, "--batches", hf.batches, json_path=tmp_path / "r.json")
    assert code == 0 and report["status"] == "clean"


@pytest.mark.parametrize("model_flag", [["--model", "transformers:GPT2LMHeadModel"], []], ids=["class", "no-flag"])
def test_trace_torch_checkpoint_with_a_transformers_config(hf: HF, tmp_path: Path, model_flag: list[str]) -> None:
    code, report = _trace(hf.bad_torch, *model_flag, "--batches", hf.batches, json_path=tmp_path / "r.json")
    assert code == 1 and report["first_nonfinite"]["module"] == BAD_MODULE


@pytest.mark.parametrize("target", ["folder", "file"])
def test_scan_finds_the_injected_nan(hf: HF, tmp_path: Path, target: str) -> None:
    path = hf.bad if target == "folder" else hf.bad / "model.safetensors"
    out = tmp_path / "scan.json"
    r = run_cli("scan", path, "--json", out)
    assert r.code == 1, r.err
    top = json.loads(out.read_text())["findings"][0]
    assert top["name"] == BAD_WEIGHT and top["nan"] == 1 and top["location"] == "parameter"
    assert run_cli("scan", hf.clean).code == 0


@pytest.mark.slow
def test_installed_console_script_traces_a_folder(hf: HF, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("nanprobe")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    out = tmp_path / "report.json"
    done = subprocess.run([str(script), "trace", str(hf.bad), "--batches", str(hf.batches), "--json", str(out),
                           "--no-replay"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 1, done.stderr
    assert json.loads(out.read_text())["first_nonfinite"]["module"] == BAD_MODULE


# ------------------------------------------------------------------------------------------------ errors


def test_lone_safetensors_without_config_needs_model(hf: HF, tmp_path: Path) -> None:
    r = run_cli("trace", _lone(hf, tmp_path), "--batches", hf.batches)
    assert r.code == 2
    line = one_error_line(r)
    assert "no config.json beside them" in line and "pass --model MODULE:CALLABLE" in line


def test_unknown_architecture(hf: HF, tmp_path: Path) -> None:
    folder = tmp_path / "future"
    shutil.copytree(hf.clean, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="gpt9000", architectures=["GPT9000ForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    r = run_cli("trace", folder, "--batches", hf.batches)
    assert r.code == 2
    line = one_error_line(r)
    assert "model_type 'gpt9000'" in line and "does not know" in line and "upgrade transformers" in line


def test_transformers_missing(hf: HF, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    for command in (["trace", hf.clean, "--batches", hf.batches], ["trace", hf.bad_torch, "--batches", hf.batches]):
        r = run_cli(*command)
        assert r.code == 2
        line = one_error_line(r)
        assert "needs the transformers package, which is not installed" in line
        assert "pip install transformers, or pass --model MODULE:CALLABLE" in line
    assert run_cli("scan", hf.bad).code == 1  # scanning needs no transformers


def test_base_model_for_a_config_without_architectures(hf: HF, tmp_path: Path) -> None:
    config = hf.model.config.to_dict()
    config["architectures"] = None
    path = tmp_path / "noarch.pt"
    torch.save({"model_state_dict": hf.model.state_dict(), "config": config}, path)
    r = run_cli("trace", path, "--batches", hf.batches)
    assert r.code == 2
    line = one_error_line(r)
    assert "'transformers:AutoModel'" in line and "unexpected keys [lm_head.weight]" in line
    assert "pass --model transformers:CLASS" in line
