"""Attention written by hand, causal masks, and the causes that only the mode (or nothing) explains."""

from __future__ import annotations

import torch
from torch import nn

from nanprobe.diagnosis import diagnose
from tests.diagnosis import models as M


def test_hand_written_softmax_attention_over_all_masked_row() -> None:
    x = torch.randn(3, 5, 8)
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[1] = True
    d = diagnose(M.SoftmaxAttention(), [(x, padding)])
    fn = d.first_nonfinite
    assert fn["op"] == "aten._softmax" and fn["samples"] == [1] and fn["kind"] == "nan"
    assert d.verdict["cause"] == "fully_masked_attention"
    assert d.verdict["fix"].startswith("sample 1 has no key to attend to at positions 0-4")
    assert not any(item["op"] == "aten._softmax" for item in d.latent)


def test_left_padded_causal_attention_names_positions_per_sample() -> None:
    tokens = torch.randint(1, 10, (5, 6), generator=torch.Generator().manual_seed(1))
    tokens[1, :2] = 0
    tokens[3, :4] = 0
    d = diagnose(M.CausalMHA().eval(), [tokens])
    assert d.verdict["cause"] == "fully_masked_attention"
    assert d.first_nonfinite["samples"] == [1, 3]
    assert "samples 1 (positions 0-1), 3 (positions 0-3) have no key to attend to (attn)" in d.verdict["fix"]
    details = {s["sample"]: s["masked_positions"] for s in d.sample_details}
    assert details == {1: [0, 1], 3: [0, 1, 2, 3]}


def test_mode_dependent() -> None:
    d = diagnose(M.EvalOnlyNaN(), [torch.randn(3, 4)])
    assert d.first_nonfinite["op"] == "aten.full_like"
    assert d.verdict["cause"] == "mode_dependent"
    assert "train mode -> finite" in d.verdict["evidence"]


def test_unknown_lists_what_was_tried() -> None:
    d = diagnose(M.AlwaysNaN(), [torch.randn(3, 4)])
    assert d.verdict["cause"] == "unknown"
    assert "train mode -> still NaN" in d.verdict["evidence"]
    assert "upcast to float64 -> still NaN" in d.verdict["evidence"]


def test_autocast_variant_runs_when_autocast_is_active() -> None:
    x = torch.rand(4, 4) + 0.1
    x[2, 0] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = diagnose(M.LogModel(), [x])
    assert torch.is_autocast_enabled("cpu") is False
    assert any(r["variant"] == "autocast off" and r["nonfinite"] for r in d.replay)
    assert d.verdict["cause"] == "numerical_domain"


def test_nan_buffer_is_a_nonfinite_parameter() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[1].running_var[2] = float("nan")
    d = diagnose(model, [torch.randn(3, 4)])
    assert d.nonfinite_parameters == ["1.running_var"]
    assert d.first_nonfinite["module"] == "1" and d.first_nonfinite["module_type"] == "BatchNorm1d"
    assert d.verdict["cause"] == "nonfinite_parameter"
    assert torch.isnan(model[1].running_var[2])


def test_dict_batch_with_inf_input() -> None:
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * scale

    scale = torch.ones(5, 1)
    scale[4] = float("inf")
    d = diagnose(Two(), [{"x": torch.randn(5, 4), "scale": scale}])
    assert d.first_nonfinite["module"] == "<input>" and d.first_nonfinite["samples"] == [4]
    assert d.first_nonfinite["kind"] == "inf"
    assert d.verdict["cause"] == "nonfinite_input"
    assert "scale" in d.verdict["fix"]


def test_where_masked_log_has_a_nan_gradient() -> None:
    d = diagnose(M.WhereLog(), [torch.randn(6, 3)], backward=True)
    assert d.first_nonfinite["phase"] == "backward" and d.first_nonfinite["op"] == "aten.log"
    assert d.verdict["cause"] == "numerical_domain"
    assert "torch.where" in d.verdict["fix"]
    assert any(item["op"] == "aten.log" for item in d.latent)


def test_underflow_into_log_is_numerical_domain_with_upcast_evidence() -> None:
    model = M.LogSigmoid()
    with torch.no_grad():
        model.lin.weight.fill_(1.0)
        model.lin.bias.zero_()
    x = torch.tensor([[1.0, 1.0], [-100.0, -100.0], [0.5, 0.0]])
    d = diagnose(model, [x])
    assert d.first_nonfinite["op"] == "aten.log" and d.first_nonfinite["samples"] == [1]
    assert d.verdict["cause"] == "numerical_domain"
    assert "upcast to float64 -> finite" in d.verdict["evidence"]



def test_falls_back_to_the_probe_when_the_dispatch_run_fails(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from nanprobe.diagnosis.localize import Localizer

    def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("dispatch mode unsupported here")

    monkeypatch.setattr(Localizer, "observe", broken)
    x = torch.rand(4, 4) + 0.1
    x[2, 1] = 0
    d = diagnose(M.LogModel(), [x])
    assert d.status == "nonfinite"
    assert d.first_nonfinite["module"] == "feat" and d.first_nonfinite["op"] is None
    assert any("dispatch-mode localization raised RuntimeError" in e for e in d.verdict["evidence"])


def test_mean_over_all_padding_names_the_empty_sample() -> None:
    tokens = torch.randint(1, 10, (4, 5), generator=torch.Generator().manual_seed(2))
    tokens[2] = 0
    d = diagnose(M.MeanPool(), [tokens])
    assert d.first_nonfinite["op"] == "aten.div" and d.first_nonfinite["samples"] == [2]
    assert d.verdict["cause"] == "numerical_domain"
    assert "is 0 for sample 2" in d.verdict["fix"]
    assert d.sample_details[0]["notes"] == ["batch: all 5 tokens are padding (id 0)"]


def test_cross_entropy_with_every_target_ignored() -> None:
    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(self.lin(x), y, ignore_index=-100)

    d = diagnose(Classifier(), [(torch.randn(3, 4), torch.full((3,), -100))])
    assert d.first_nonfinite["op"] == "aten.nll_loss_forward"
    assert d.verdict["cause"] == "numerical_domain" and "ignore_index" in d.verdict["fix"]


class _ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def test_negative_running_var_is_named_as_evidence() -> None:
    torch.manual_seed(0)
    model = _ConvBN().eval()
    with torch.no_grad():
        model.bn.running_var[1] = -1.0  # finite, so not a nonfinite_parameter, but impossible
    d = diagnose(model, [torch.randn(2, 3, 6, 6)])
    assert d.first_nonfinite["module"] == "bn" and d.first_nonfinite["op"] == "aten.native_batch_norm"
    assert d.verdict["cause"] == "numerical_domain"
    assert any(e.startswith("bn.running_var is negative at channel(s) [1]") for e in d.verdict["evidence"])
    assert "running_var is negative" in d.verdict["fix"]


class _SeqFirstAttention(nn.Module):
    """nn.MultiheadAttention with its default batch_first=False: inputs (L, B, E), padding mask (B, L)."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(d, 2)
        self.out = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        y, _ = self.mha(x, x, x, key_padding_mask=pad)  # need_weights: the python softmax path
        return self.out(y.mean(0))


def test_sequence_first_batch_is_bisected_along_its_batch_dimension() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 4, 8)  # (L=5, B=4, E)
    pad = torch.zeros(4, 5, dtype=torch.bool)
    pad[2] = True  # sample 2 has nothing to attend to
    d = diagnose(_SeqFirstAttention().eval(), [(x, pad)])
    assert d.first_nonfinite["module"] == "mha" and d.first_nonfinite["samples"] == [2]
    assert d.verdict["cause"] == "fully_masked_attention"
    assert "samples 2 only -> still NaN" in d.verdict["evidence"]
    assert "the other samples only -> finite" in d.verdict["evidence"]
