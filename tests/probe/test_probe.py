"""The probe on tiny models that misbehave on purpose."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from nanprobe.probe import INPUT, Probe, probe_model, special
from nanprobe.probe.special import fully_masked_rows
from tests.probe import models


def by_module(result, name: str):
    return [r for r in result.records if r.module == name and r.phase == "forward"]


def test_log_zero_is_origin_and_three_after_propagate() -> None:
    model = models.log_chain(row=2)
    result = probe_model(model, torch.randn(5, 4))
    assert result.status == "nonfinite"
    assert result.origin is not None and result.origin.module == "1"
    assert result.origin.module_type == "Log" and result.origin.kind == "inf"
    assert result.origin.inputs_finite and result.origin.params_finite
    assert result.origin.samples == [2]
    assert [by_module(result, n)[0].role for n in ("2", "3", "4")] == ["propagated"] * 3
    assert by_module(result, "0")[0].role is None
    assert result.first_nonfinite() == {"module": "1", "module_type": "Log", "phase": "forward", "kind": "inf",
                                        "batch_index": 0, "samples": [2], "op": None, "source": None}
    assert result.latent == []


def test_nan_input_row_is_origin_input() -> None:
    x = torch.randn(6, 4)
    x[4, 1] = math.nan
    result = probe_model(models.mlp(), x)
    assert result.status == "nonfinite"
    assert result.origin is not None and result.origin.module == INPUT and result.origin.samples == [4]
    assert result.input_nonfinite == {"paths": ["in[0]"], "kind": "nan", "samples": [4], "step": 1}
    assert result.first_nonfinite()["module"] == "<input>"
    assert all(r.role in ("propagated", None) for r in result.records)
    assert by_module(result, "0")[0].inputs_finite is False


def test_nan_input_by_keyword_is_named() -> None:
    class Kw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 1)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.lin(features)

    x = torch.ones(3, 3)
    x[1, 0] = math.inf
    result = probe_model(Kw(), {"features": x})
    assert result.input_nonfinite["paths"] == ["in.features"] and result.input_nonfinite["samples"] == [1]
    assert result.origin.module == INPUT


def test_nan_parameter_names_module_and_parameter() -> None:
    model = models.mlp()
    with torch.no_grad():
        model[4].weight[1, 3] = math.nan
    result = probe_model(model, torch.randn(3, 4))
    assert result.status == "nonfinite"
    assert result.nonfinite_parameters == ["4.weight"]
    assert result.origin.module == "4" and result.origin.module_type == "Linear"
    assert result.origin.nonfinite_params == ["4.weight"] and result.origin.params_finite is False
    assert result.origin.samples == [0, 1, 2]
    assert by_module(result, "0")[0].params_finite is True


def test_unused_nan_buffer_is_listed_but_clean() -> None:
    model = models.mlp()
    model.register_buffer("unused", torch.tensor([math.nan]))
    result = probe_model(model, torch.randn(2, 4))
    assert result.status == "clean" and result.nonfinite_parameters == ["unused"] and result.origin is None


def test_fully_masked_mha_row_names_the_sample() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    model = nn.Sequential()  # wrapper so that MHA is a named child
    model.attn = mha
    x = torch.randn(3, 5, 8)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[1, :2] = True  # sample 1: queries 0 and 1 see only padded keys under the causal mask
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    with torch.no_grad(), Probe(mha) as probe:
        out, _ = mha(x, x, x, key_padding_mask=pad, attn_mask=causal, need_weights=False)
    assert torch.isnan(out[1, :2]).all()  # the native fast path's NaN
    result = probe.result()
    rec = result.origin
    assert result.status == "nonfinite" and rec is not None and rec.module_type == "MultiheadAttention"
    assert rec.samples == [1] and rec.kind == "nan"
    assert rec.extra["fully_masked_rows"] == [0, 2, 0] and rec.extra["fully_masked_samples"] == [1]
    assert rec.extra["key_padding_mask"] == "bool(3, 5)" and rec.extra["attn_mask"] == "bool(5, 5)"
    assert rec.extra["training"] is False


def test_sequence_first_output_uses_the_dim_of_batch_size() -> None:
    class SeqFirst(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, E) -> (L, B, E)
            keep = torch.ones(x.shape[0], 1, 1)
            keep[2] = 0.0
            return torch.log((x.abs() + 1) * keep).transpose(0, 1)

    result = probe_model(SeqFirst(), torch.randn(3, 5, 4))
    assert result.origin.outputs["out"].shape == (5, 3, 4) and result.origin.samples == [2]


def test_fully_masked_rows_counts() -> None:
    pad = torch.tensor([[False, False, True], [True, True, True]])
    assert fully_masked_rows(pad, None, 2, 4, 3) == [0, 4]
    causal = torch.ones(3, 3, dtype=torch.bool).triu(1)
    first_padded = torch.tensor([[True, False, False], [False, False, False]])
    assert fully_masked_rows(first_padded, causal, 2, 3, 3) == [1, 0]
    assert fully_masked_rows(first_padded, None, 2, 3, 3, is_causal=True) == [1, 0]
    additive = torch.zeros(3, 3)
    additive[1] = -math.inf
    assert fully_masked_rows(None, additive, 2, 3, 3) == [1, 1]
    per_head = torch.zeros(2 * 2, 3, 3, dtype=torch.bool)  # (B * heads, L, S)
    per_head[3, 0] = True  # sample 1, head 1, query 0
    assert fully_masked_rows(None, per_head, 2, 3, 3) == [0, 1]
    assert fully_masked_rows(None, None, 2, 3, 3) is None


def test_intentional_masked_inf_is_latent_and_clean() -> None:
    model = models.MaskedAttention()
    mask = torch.zeros(3, 5, 5, dtype=torch.bool)
    mask[:, :, 4] = True  # every query keeps keys 0..3
    result = probe_model(model, (torch.randn(3, 5, 4), mask))
    assert result.status == "clean" and result.origin is None and result.first_nonfinite() is None
    assert [r.module for r in result.latent] == ["mask"]
    assert result.latent[0].kind == "inf" and by_module(result, "mask")[0].role == "latent"
    assert by_module(result, "softmax")[0].inputs_finite is False


def test_softmax_over_fully_masked_row_is_the_producer_not_the_mask() -> None:
    model = models.MaskedAttention()
    mask = torch.zeros(3, 5, 5, dtype=torch.bool)
    mask[:, :, 4] = True
    mask[1, 2, :] = True  # sample 1, query 2 attends to nothing
    result = probe_model(model, (torch.randn(3, 5, 4), mask))
    assert result.status == "nonfinite"
    assert result.origin.module == "softmax" and result.origin.kind == "nan" and result.origin.samples == [1]
    assert [r.module for r in result.latent] == ["mask"]
    assert by_module(result, "")[0].role == "propagated"


def test_inline_softmax_container_is_producer_not_its_mask_child() -> None:
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[:, :, 2] = True
    mask[0, 1, :] = True
    result = probe_model(models.InlineSoftmaxAttention(), (torch.randn(2, 3, 4), mask))
    assert result.origin.module == "" and result.origin.module_type == "InlineSoftmaxAttention"
    assert result.origin.samples == [0] and [r.module for r in result.latent] == ["mask"]


def test_container_does_not_steal_origin_from_leaf() -> None:
    inner = models.log_chain(row=0)
    model = nn.Sequential(nn.Identity(), inner)
    result = probe_model(model, torch.randn(2, 4))
    assert result.origin.module == "1.1"
    assert by_module(result, "1")[0].role == "propagated"


def test_structured_outputs_dict_tuple_dataclass() -> None:
    result = probe_model(models.DictOut(), torch.randn(2, 3))
    root = by_module(result, "")[0]
    assert list(root.outputs) == ["out['logits']", "out['aux'][0]"]
    result = probe_model(models.StructOut(), torch.randn(2, 3))
    root = by_module(result, "")[0]
    assert list(root.outputs) == ["out[0]", "out[1].hidden", "out[1].pair.left", "out[1].pair.right"]
    assert root.outputs["out[1].pair.right"].max == pytest.approx(-root.outputs["out[1].pair.left"].min)


def test_nonfinite_in_dataclass_output_is_found() -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> models.Output:
            h = x.clone()
            h[1] = math.inf
            return models.Output(hidden=x, pair=models.Pair(x, h))

    result = probe_model(Bad(), torch.randn(3, 2))
    assert result.status == "nonfinite" and result.origin.samples == [1]
    assert result.origin.outputs["out.pair.right"].posinf == 2


def test_filters_and_types() -> None:
    model = models.mlp()
    with Probe(model, include="[0-2]") as probe:
        model(torch.randn(2, 4))
    assert [r.module for r in probe.result().records] == ["", "0", "1", "2"]
    with Probe(model, exclude=["1", "3"], types=(nn.Linear, nn.LayerNorm)) as probe:
        model(torch.randn(2, 4))
    assert [r.module for r in probe.result().records] == ["", "0", "2", "4"]
    with Probe(model, include=lambda name, m: isinstance(m, nn.ReLU)) as probe:
        model(torch.randn(2, 4))
    assert [r.module_type for r in probe.result().records] == ["Sequential", "ReLU"]


def test_dropout_and_layernorm_extras() -> None:
    model = models.mlp().train()
    with Probe(model) as probe:
        model(torch.full((3, 4), 1.0))
    recs = {r.module: r for r in probe.result().records}
    assert recs["3"].extra == {"p": 0.1, "active": True}
    assert recs["2"].extra["eps"] == 1e-5 and recs["2"].extra["min_input_var"] >= 0.0
    ln = nn.LayerNorm(4)
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 2.0]])
    with Probe(ln) as probe:
        ln(x)
    assert probe.result().records[0].extra["min_input_var"] == pytest.approx(0.0, abs=1e-7)
    model.eval()
    with Probe(model) as probe:
        model(torch.ones(1, 4))
    assert {r.module: r for r in probe.result().records}["3"].extra["active"] is False


def test_layernorm_variance_is_sampled_and_taken_when_the_output_is_non_finite() -> None:
    """min_input_var costs two passes over the input: measured on the first of every LN_EVERY calls of a
    module, skipped on the finite calls in between, always measured when the output is non-finite."""
    ln = nn.LayerNorm(4, eps=0.0)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 0.0, 2.0]])
    flat = torch.ones(1, 4)  # zero variance and eps=0: 0/0 -> NaN
    with torch.no_grad(), Probe(ln, ring_size=64) as probe:
        for _ in range(special.LN_EVERY + 1):
            ln(x)
        ln(flat)
    records = probe.result().records
    measured = [i for i, r in enumerate(records) if "min_input_var" in r.extra]
    assert measured == [0, special.LN_EVERY, special.LN_EVERY + 1]
    assert records[0].extra["min_input_var"] == pytest.approx(1.0)
    assert records[-1].extra["min_input_var"] == 0.0 and records[-1].role == "origin"
    assert all(r.extra["eps"] == 0.0 and "_deferred" not in r.extra for r in records)


def test_modes_no_grad_inference_autocast() -> None:
    model = models.log_chain(row=1)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert probe_model(model, x).origin.module == "1"
    with torch.inference_mode():
        assert probe_model(model, x).origin.module == "1"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = probe_model(model, x)
    assert result.origin.module == "1"
    assert any(s.dtype == "bfloat16" for r in result.records for s in r.outputs.values())


def test_vector_path_matches_cpu_path() -> None:
    """The batched read-back path (used off the CPU) gives the same classification."""
    model = models.MaskedAttention()
    mask = torch.zeros(3, 5, 5, dtype=torch.bool)
    mask[:, :, 4] = True
    mask[1, 2, :] = True
    x = torch.randn(3, 5, 4)
    direct = probe_model(model, (x, mask))
    probe = Probe(model, ring_size=4)
    probe._force_vector = True
    with probe:
        model(x, mask)
    batched = probe.result()
    assert batched.origin.module == direct.origin.module == "softmax"
    assert batched.origin.samples == [1] and [r.module for r in batched.latent] == ["mask"]
    kept = {r.module: r for r in batched.records}
    assert {"", "mask", "softmax"} <= set(kept)  # ring of 4 + the non-finite ones always kept
    for a in direct.records:
        b = kept.get(a.module)
        if b is None:
            continue
        assert a.role == b.role and a.samples == b.samples and a.inputs_finite == b.inputs_finite
        for key in a.outputs:
            assert a.outputs[key].nan == b.outputs[key].nan and a.outputs[key].neginf == b.outputs[key].neginf
            assert a.outputs[key].max == pytest.approx(b.outputs[key].max, rel=1e-5)


def test_origin_is_found_in_a_later_step() -> None:
    model = nn.Sequential(nn.Identity(), models.Log())
    with Probe(model) as probe:
        model(torch.ones(2, 3))  # step 1: clean
        model(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]))  # step 2: log(0)
        model(torch.zeros(2, 3))  # step 3: log(0) again; the origin stays the first one
    result = probe.result()
    assert result.status == "nonfinite" and result.calls == 9
    assert (result.origin.module, result.origin.step, result.origin.samples) == ("1", 2, [1])
    assert [r.role for r in result.records if r.step == 1] == [None, None, None]


def test_transformer_encoder_layer_keeps_its_fast_path_nan() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True).eval()
    body = nn.Sequential(nn.Linear(8, 8), layer)
    x = torch.randn(3, 4, 8)
    pad = torch.zeros(3, 4, dtype=torch.bool)
    pad[2] = True  # sample 2 is all padding: its queries attend to nothing

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
            return self.body[1](self.body[0](x), src_key_padding_mask=pad)

    wrapped = Wrap()
    with torch.no_grad():
        bare = wrapped(x, pad)
        result = probe_model(wrapped, (x, pad))
    assert torch.isnan(bare[2]).all()  # the fast path's NaN ...
    assert result.status == "nonfinite"  # ... is still there under the probe
    origin = result.origin
    assert origin.module == "body.1" and origin.module_type == "TransformerEncoderLayer"
    assert origin.samples == [2] and origin.extra["key_padding_mask"] == "bool(3, 4)"
    assert origin.extra["fully_masked_rows"] == [0, 0, 4]
    assert not nn.modules.module._global_forward_hooks and not nn.modules.module._global_forward_pre_hooks


def test_float_additive_mask_in_batch_is_not_a_nonfinite_input() -> None:
    class Additive(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.softmax(x @ x.transpose(-1, -2) + mask) @ x

    x = torch.randn(2, 3, 4)
    mask = torch.zeros(3, 3)
    mask[:, 2] = -math.inf
    result = probe_model(Additive(), (x, mask))
    assert result.status == "clean" and result.input_nonfinite is None
    mask[1, :] = -math.inf  # query 1 attends to nothing: softmax makes NaN
    result = probe_model(Additive(), (x, mask))
    assert result.status == "nonfinite" and result.input_nonfinite is None
    assert result.origin.module == "softmax" and result.origin.samples == [0, 1]


def test_device_side_extras_are_read_back_as_floats(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_ln(module: nn.Module, args: tuple, kwargs: dict) -> dict:
        return {"eps": 1e-5, "min_input_var": torch.tensor(0.25, dtype=torch.float64)}  # as off the CPU

    monkeypatch.setattr(special, "_EXTRACTORS", ((nn.LayerNorm, fake_ln),))
    model = models.mlp()
    probe = Probe(model, ring_size=16)
    probe._force_vector = True
    with probe:
        model(torch.randn(3, 4))
    rec = next(r for r in probe.result().records if r.module == "2")
    assert rec.extra == {"eps": 1e-5, "min_input_var": 0.25}
    assert probe.result().status == "clean" and len(probe._queue) == 0


def test_encoder_stack_with_nested_tensor_fast_path() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2).eval()  # enable_nested_tensor: padded input becomes nested
    x = torch.randn(3, 4, 8)
    pad = torch.zeros(3, 4, dtype=torch.bool)
    pad[0, 2:] = True
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: nested tensors are a prototype
        result = probe_model(encoder, {"src": x, "src_key_padding_mask": pad})
    assert result.status == "clean"
    layers = [r for r in result.records if r.module_type == "TransformerEncoderLayer"]
    assert [r.module for r in layers] == ["layers.0", "layers.1"]
    assert layers[0].outputs["out"].numel == (4 + 4 + 2) * 8  # the nested components, padding dropped


class _LogBetweenChildren(nn.Module):
    """log(0) in the module's own forward code, between two children; the second child passes it on."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.log(self.fc(x).relu()))


def test_value_made_in_a_modules_own_code_names_that_module_not_the_child_it_passes_through() -> None:
    torch.manual_seed(0)
    model = _LogBetweenChildren()
    x = torch.randn(8, 4)
    with Probe(model) as probe:
        model(x)
    result = probe.result()
    assert result.status == "nonfinite"
    assert result.origin is not None and result.origin.module == ""  # the root: torch.log in its own forward
    expected = (model.fc(x).relu() == 0).any(dim=1).nonzero().flatten().tolist()
    assert result.origin.samples == expected
    roles = {r.module: r.role for r in result.records}
    assert roles["out"] == "propagated" and roles["fc"] is None
