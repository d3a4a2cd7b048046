"""Loading without a second copy: the model takes the checkpoint's memory-mapped tensors by assignment, and ends
up bitwise equal to a normal build + load_state_dict (buffers, tied weights, outputs); each way the meta build can
go wrong falls back to a normal build, and the path taken is the one expected."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from nanprobe.loading import load_checkpoint
from nanprobe.materialize import Fitted, fit
from tests.cli.conftest import FACTORY, Files

# ------------------------------------------------------------------------------------------------ helpers


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_same_model(got: nn.Module, expected: nn.Module, *inputs: torch.Tensor) -> None:
    """state_dict() equal bit for bit (dtype and shape too), buffers included, and the same outputs."""
    a, b = got.state_dict(), expected.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(_bits(a[key]), _bits(b[key])), key
    if inputs:
        got.eval(), expected.eval()
        with torch.no_grad():
            assert torch.equal(_bits(got(*inputs)), _bits(expected(*inputs)))


def plain_load(build: Callable[[], nn.Module], state: dict[str, torch.Tensor]) -> nn.Module:
    model = build()
    model.load_state_dict(state, strict=False)
    return model


def mapped_from(tensor: torch.Tensor, path: Path) -> bool:
    """Whether ``tensor``'s memory is a mapping of ``path`` (Linux: /proc/self/maps)."""
    ptr, name = tensor.data_ptr(), str(path.resolve())
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if fields[-1] == name and low <= ptr < high:
            return True
    return False


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")


# ------------------------------------------------------------------------------------------ tiny models


class WithTable(nn.Module):
    """A non-persistent buffer computed in __init__ (not in the state dict), and a persistent one."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("positions", torch.arange(4.0) / 3, persistent=False)
        self.register_buffer("scale", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x + self.positions) * self.scale


class RandomTable(WithTable):
    """A non-persistent buffer drawn from the global RNG after the weights' init."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("noise", torch.randn(4), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.noise


class ReadsAValue(nn.Module):
    """Its __init__ reads a weight: impossible with parameters on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.first = float(self.fc.weight.detach()[0, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class KeepsAReference(nn.Module):
    """Keeps its weight in a plain list too: assignment would leave that list stale."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.cache = [self.fc.weight]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.cache[0].T + self.fc.bias


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


def _seeded(cls: type[nn.Module], seed: int = 0) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        return cls()
    return build


def _trained_state(cls: type[nn.Module]) -> dict[str, torch.Tensor]:
    """A state dict unlike a fresh init's (seed 1), so a load that drops a value shows."""
    return _seeded(cls, seed=1)().state_dict()


# -------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("cls", "seed", "how"), [
    (WithTable, None, "meta"),
    (Recurrent, 0, "meta"),  # LSTM keeps _flat_weights, and updates it on assignment
    (WithTable, 0, "assign"),  # seeding touches the RNG: its own buffer is not trusted from a meta build
    (RandomTable, 0, "assign"),  # a meta build would draw a different buffer than a normal one
    (ReadsAValue, 0, "assign"),
    (KeepsAReference, 0, "copy"),
])
def test_each_path_equals_a_plain_load(cls: type[nn.Module], seed: int | None, how: str) -> None:
    build = _seeded(cls, seed) if seed is not None else cls
    state = _trained_state(cls)
    fitted = fit(build, state)
    assert isinstance(fitted, Fitted) and fitted.how == how
    assert fitted.missing == [] and fitted.unexpected == []
    assert not any(t.is_meta for t in [*fitted.model.parameters(), *fitted.model.buffers()])
    inputs = torch.randn(2, 5, 4) if cls is Recurrent else torch.randn(2, 4)
    assert_same_model(fitted.model, plain_load(build, state), inputs)


def test_assignment_takes_the_tensors_instead_of_copying() -> None:
    state = _trained_state(WithTable)
    model = fit(WithTable, state).model
    assert model.fc.weight.data_ptr() == state["fc.weight"].data_ptr()
    assert model.scale.data_ptr() == state["scale"].data_ptr()
    assert isinstance(model.fc.weight, nn.Parameter) and model.fc.weight.requires_grad
    assert not model.scale.requires_grad


@pytest.mark.parametrize("keys", [["embed.weight"], ["head.weight"], ["embed.weight", "head.weight"]])
def test_tied_weights_stay_tied_with_the_value_a_copy_leaves(keys: list[str]) -> None:
    trained = _trained_state(Tied)
    state = {k: trained[k] for k in keys}
    if len(keys) == 2:  # both names, different values: a copy into the shared tensor keeps the last one loaded
        state["head.weight"] = trained["head.weight"] * 2
    fitted = fit(_seeded(Tied), state)
    assert fitted.how == "meta" and fitted.missing == []
    assert fitted.model.head.weight is fitted.model.embed.weight
    assert_same_model(fitted.model, plain_load(_seeded(Tied), state), torch.tensor([[1, 2, 3]]))


def test_dtype_and_layout_are_converted_as_a_copy_converts() -> None:
    state = {k: v.double() for k, v in _trained_state(WithTable).items()}
    state["fc.weight"] = state["fc.weight"].T.contiguous().T  # same values, transposed layout
    fitted = fit(WithTable, state)
    assert fitted.how == "meta"
    assert fitted.model.fc.weight.dtype == torch.float32 and fitted.model.fc.weight.is_contiguous()
    assert_same_model(fitted.model, plain_load(WithTable, state), torch.randn(2, 4))


def test_missing_and_unexpected_keys_are_reported() -> None:
    state = _trained_state(WithTable)
    del state["fc.bias"]
    state["extra"] = torch.zeros(1)
    fitted = fit(WithTable, state)
    assert fitted.how == "assign"  # fc.bias stayed on meta, so the model was built normally
    assert fitted.missing == ["fc.bias"] and fitted.unexpected == ["extra"]


def test_wrapper_prefixes_are_removed() -> None:
    state = {f"module.{k}": v for k, v in _trained_state(WithTable).items()}
    fitted = fit(WithTable, state)
    assert fitted.missing == [] and fitted.unexpected == []
    assert torch.equal(fitted.model.fc.weight, state["module.fc.weight"])


def test_a_failing_factory_raises_from_the_normal_build() -> None:
    calls = []

    def build() -> nn.Module:
        calls.append(1)
        raise ValueError("no model today")

    with pytest.raises(ValueError, match="no model today"):
        fit(build, {})
    assert len(calls) == 2  # the trial on meta, then the normal build whose error the user sees


@linux_only
def test_checkpoint_weights_stay_mapped_from_the_file(files: Files) -> None:
    loaded = load_checkpoint(files.generic, model_spec=FACTORY)
    assert loaded.mapped
    assert mapped_from(loaded.model.fc1.weight, files.generic)


def test_legacy_format_is_read_normally_and_still_assigned(tmp_path: Path) -> None:
    from tests.cli import models

    legacy = tmp_path / "legacy.pt"
    torch.save({"state_dict": models.make_broken(hidden=8).state_dict()}, legacy, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint(legacy, model_spec=FACTORY)
    assert not loaded.mapped  # the legacy format cannot be mapped
    assert_same_model(loaded.model, models.make_broken(), torch.randn(3, 4))


def test_gpt2_checkpoint_loads_bitwise_like_a_plain_load(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    trained = transformers.GPT2LMHeadModel(config)
    path = tmp_path / "gpt2.pt"
    torch.save({"model_state_dict": trained.state_dict(), "config": config.to_dict()}, path)

    loaded = load_checkpoint(path, model_spec="transformers:GPT2LMHeadModel")
    model = loaded.model
    assert loaded.mapped and loaded.kind == "state_dict"
    assert model.lm_head.weight is model.transformer.wte.weight
    if sys.platform.startswith("linux"):
        assert mapped_from(model.transformer.h[0].attn.c_attn.weight, path)
    reference = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config.to_dict()))
    reference.load_state_dict(torch.load(path, weights_only=True)["model_state_dict"])
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    assert_same_model(model, reference)
    model.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
