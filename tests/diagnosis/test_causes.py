"""Each cause of the contract's table, pinned on a tiny model that misbehaves on purpose."""

from __future__ import annotations

from pathlib import Path

import torch

from nanprobe.diagnosis import Diagnosis, diagnose
from tests.diagnosis import models as M


def _evidence(d: Diagnosis) -> list[str]:
    assert d.verdict is not None
    return d.verdict["evidence"]


def test_healthy_model_is_clean() -> None:
    d = diagnose(M.Healthy(), [torch.randn(3, 4), torch.randn(2, 4)])
    assert d.status == "clean"
    assert d.verdict is None and d.first_nonfinite is None
    assert d.latent == [] and d.nonfinite_parameters == []


def test_intentional_masked_inf_is_latent_not_failure() -> None:
    d = diagnose(M.IntentionalMask(), [torch.randn(2, 3, 4)])
    assert d.status == "clean"
    assert d.verdict is None
    assert d.latent == [{"module": "", "kind": "inf", "op": "aten.masked_fill", "phase": "forward"}]


def test_log_zero_is_numerical_domain_with_op_and_source() -> None:
    x = torch.rand(8, 4) + 0.1
    x[3, 1] = 0
    x[5, 0] = 0
    d = diagnose(M.LogModel(), [x])
    fn = d.first_nonfinite
    assert fn is not None
    assert (fn["module"], fn["module_type"], fn["op"], fn["kind"]) == ("feat", "LogFeature", "aten.log", "inf")
    assert fn["samples"] == [3, 5]
    line = _line_of("# LOG-LINE")
    assert fn["source"].endswith(f"models.py:{line}")
    assert d.verdict["cause"] == "numerical_domain"
    assert "aten.log" in d.verdict["summary"]
    assert "samples 3, 5 only -> still Inf" in _evidence(d)
    assert "the other samples only -> finite" in _evidence(d)


def test_fully_masked_mha_fast_path() -> None:
    d = diagnose(M.MaskedAttention().eval(), [M.fully_masked_batch(4, 6, (1, 2))])
    fn = d.first_nonfinite
    assert fn["module"] == "attn" and fn["op"] == "aten._native_multi_head_attention"
    assert fn["samples"] == [1, 2] and fn["kind"] == "nan"
    assert d.verdict["cause"] == "fully_masked_attention"
    ev = _evidence(d)
    assert "fast path off -> finite" in ev
    assert "train mode -> finite" in ev
    assert "dropout p=0: skipped (no dropout in model)" in ev
    assert "samples 1, 2 have no key to attend to at positions 0-5" in d.verdict["fix"]
    details = {s["sample"]: s for s in d.sample_details}
    assert details[1]["masked_positions"] == [0, 1, 2, 3, 4, 5]
    assert any("all 6 positions set" in n for n in details[2]["notes"])


def test_fully_masked_mha_with_dropout_says_dropout_is_not_it() -> None:
    batch = M.fully_masked_batch(4, 6, (0,))
    d = diagnose(M.MaskedAttention(dropout=0.1).eval(), [batch])
    assert d.verdict["cause"] == "fully_masked_attention"
    assert "dropout p=0 -> still NaN" in _evidence(d)  # varied, not assumed: the original wrong story
    assert d.first_nonfinite["samples"] == [0]


def test_transformer_encoder_fast_path_hidden_by_hooks_is_still_localized() -> None:
    padding = torch.tensor([[False] * 4, [True] * 4, [False, False, True, True]])
    d = diagnose(M.Encoder().eval(), [(torch.randn(3, 4, 8), padding)])
    fn = d.first_nonfinite
    assert fn["module"] == "encoder.layers.0"
    assert fn["op"] == "aten._transformer_encoder_layer_fwd"
    assert fn["samples"] == [1]
    assert d.instrumentation["hooks_changed_result"] is True
    assert any(e.startswith("per-module hooks -> non-finite output disappeared (TransformerEncoderLayer fast path")
               for e in _evidence(d))
    assert d.verdict["cause"] == "fully_masked_attention"
    assert "fast path off -> finite" in _evidence(d)
    assert {"module": "encoder", "kind": "inf", "op": "aten.masked_fill_", "phase": "forward"} in d.latent


def test_fp16_overflow_is_dtype_overflow() -> None:
    m = M.Overflow().half()
    with torch.no_grad():
        m.lin.weight.fill_(100.0)
        m.lin.bias.zero_()
    d = diagnose(m, [torch.ones(4, 4, dtype=torch.float16)])
    assert d.verdict["cause"] == "dtype_overflow"
    assert d.first_nonfinite["op"] == "aten.mul" and d.first_nonfinite["kind"] == "inf"
    assert "upcast to float32 -> finite" in _evidence(d)
    assert "65504" in d.verdict["fix"]
    assert m.lin.weight.dtype == torch.float16


def test_dropout_dependent() -> None:
    torch.manual_seed(3)
    d = diagnose(M.DropoutRatio(2, 0.5), [torch.randn(16, 2)], mode="train")
    assert d.verdict["cause"] == "dropout_dependent"
    assert "dropout p=0 -> finite" in _evidence(d)
    assert d.first_nonfinite["op"] == "aten.div"
    assert "drop.p=0.5" in d.verdict["summary"]


def test_batch_of_one_is_batch_size_dependent_with_other_batches() -> None:
    d = diagnose(M.BatchStd(), [torch.randn(4, 4), torch.randn(1, 4)], mode="train")
    assert d.first_nonfinite["batch_index"] == 1
    assert d.first_nonfinite["op"] == "aten.std"
    assert d.verdict["cause"] == "batch_size_dependent"
    assert "samples 0 mixed into batch 0 (a batch of 5) -> finite" in _evidence(d)


def test_batch_of_one_alone_is_batch_size_dependent() -> None:
    d = diagnose(M.BatchStd(), [torch.randn(1, 4)], mode="train")
    assert d.verdict["cause"] == "batch_size_dependent"
    assert "the same sample twice (batch of 2) -> finite" in _evidence(d)


def test_nan_input() -> None:
    x = torch.randn(5, 4)
    x[2, 1] = float("nan")
    d = diagnose(M.Healthy(), [torch.randn(2, 4), x])
    fn = d.first_nonfinite
    assert (fn["module"], fn["samples"], fn["batch_index"]) == ("<input>", [2], 1)
    assert d.verdict["cause"] == "nonfinite_input"
    assert d.forward_passes <= 5


def test_nan_parameter() -> None:
    m = M.Healthy()
    with torch.no_grad():
        m.out.weight[0, 0] = float("nan")
    d = diagnose(m, [torch.randn(5, 4)])
    assert d.nonfinite_parameters == ["out.weight"]
    assert d.first_nonfinite["module"] == "out"
    assert d.verdict["cause"] == "nonfinite_parameter"
    assert "out.weight" in d.verdict["fix"]


def test_sqrt_of_zero_in_backward() -> None:
    x = torch.randn(4, 3)
    x[2] = 0
    d = diagnose(M.SqrtNorm(), [x], backward=True)
    fn = d.first_nonfinite
    assert fn["phase"] == "backward"
    assert fn["op"] == "aten.sqrt" and fn["samples"] == [2]
    assert fn["source"].endswith("models.py:" + str(_line_of("torch.sqrt((h * h)")))
    assert d.verdict["cause"] == "numerical_domain"
    assert "sqrt" in d.verdict["fix"]


def test_model_that_raises_names_the_batch() -> None:
    import pytest

    from nanprobe.errors import NanprobeError

    with pytest.raises(NanprobeError, match="control batch 1") as info:
        diagnose(M.Healthy(), [torch.randn(2, 4), torch.randn(2, 5)])
    assert isinstance(info.value.__cause__, RuntimeError)


def _line_of(text: str) -> int:
    lines = Path(M.__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)
