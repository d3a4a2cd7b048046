"""The table loads, validates, covers every torch.nn loss and the required ops, and answers lookups."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from nanprobe.knowledge import (
    CAUSES,
    TableError,
    entry_for_loss,
    entry_for_op,
    load_table,
    loss_for_op,
    parse_table,
)
from nanprobe.knowledge.checks import CHECKS
from nanprobe.knowledge.table import table_path

TABLE = load_table()

# Ops whose domain restriction, singular gradient or overflow the table must cover (aten base names).
REQUIRED_OPS = [
    "log", "log2", "log10", "log1p", "xlogy", "special_xlog1py", "logit",
    "sqrt", "rsqrt", "pow", "div", "reciprocal", "fmod", "remainder",
    "acos", "asin", "atanh", "acosh", "lgamma", "digamma", "polygamma", "erfinv", "cumprod",
    "exp", "exp2", "expm1", "cosh", "sinh",
    "_softmax", "_log_softmax", "logsumexp",
    "std", "var", "std_mean", "var_mean", "mean",
    "native_layer_norm", "native_group_norm", "native_batch_norm", "rms_norm",
    "linalg_eigh", "linalg_eig", "linalg_svd", "linalg_cholesky_ex", "linalg_inv_ex", "linalg_solve_ex",
    "linalg_det", "linalg_slogdet",
    "linalg_vector_norm", "norm", "_cdist_forward", "atan2",
    "mm", "addmm", "bmm", "_to_copy",
]


def torch_loss_classes() -> list[str]:
    """Every public loss class torch.nn has: nn.Module subclasses in torch.nn.modules.loss whose name ends in
    'Loss', and anything exported from torch.nn whose name ends in 'Loss'. The private bases _Loss and
    _WeightedLoss are left out."""
    found = set()
    for name, obj in vars(torch.nn.modules.loss).items():
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and name.endswith("Loss"):
            found.add(name)
    found.update(name for name in dir(nn) if name.endswith("Loss"))
    return sorted(n for n in found if not n.startswith("_"))


def test_the_shipped_table_loads_and_validates() -> None:
    assert len(TABLE.losses) >= 23
    assert len(TABLE.ops) >= 60
    assert load_table() is TABLE  # cached
    for entry in TABLE:
        for c in entry.conditions:
            assert c.cause in CAUSES
            assert c.check is None or c.check in CHECKS
            assert "{" not in c.fix_text(where="X", who="Y")


def test_every_torch_loss_has_an_entry() -> None:
    classes = torch_loss_classes()
    assert {"CrossEntropyLoss", "CTCLoss", "TripletMarginWithDistanceLoss"} <= set(classes)
    missing = [name for name in classes if entry_for_loss(name) is None]
    assert not missing, f"torch.nn losses with no table entry: {missing}"


def test_every_loss_entry_is_a_torch_loss() -> None:
    assert sorted(e.name for e in TABLE.losses) == torch_loss_classes()


def test_loss_functional_names_exist_in_torch() -> None:
    for entry in TABLE.losses:
        for name in entry.functional:
            assert hasattr(torch.nn.functional, name), f"{entry.name}: F.{name} does not exist"


@pytest.mark.parametrize("op", REQUIRED_OPS)
def test_required_op_is_covered(op: str) -> None:
    entry = entry_for_op(f"aten.{op}")
    assert entry is not None and entry.kind == "op", op


def test_every_check_is_used_by_the_table() -> None:
    used = {c.check for e in TABLE for c in e.conditions if c.check}
    assert used == set(CHECKS), f"checks no condition uses: {sorted(set(CHECKS) - used)}"


@pytest.mark.parametrize(("spelling", "name"), [
    ("aten.log", "log"), ("log", "log"), ("log_", "log"), ("log.default", "log"), ("aten.log_.default", "log"),
    ("aten::log", "log"), ("LogBackward0", "log"), ("SqrtBackward0", "sqrt"), ("Log1PBackward0", "log1p"),
    ("PowBackward1", "pow"), ("aten.pow.Tensor_Scalar", "pow"), ("NativeLayerNormBackward0", "native_layer_norm"),
    ("LinalgEighBackward0", "linalg_eigh"), ("aten._linalg_eigh", "linalg_eigh"), ("CdistBackward0", "_cdist_forward"),
    ("SpecialXlog1PyBackward0", "special_xlog1py"), ("aten._softmax.default", "_softmax"),
    ("SoftmaxBackward0", "_softmax"), ("LogSoftmaxBackward0", "_log_softmax"), ("StdMeanBackward0", "std_mean"),
    ("AddmmBackward0", "addmm"), ("aten._to_copy", "_to_copy"), ("LinalgVectorNormBackward0", "linalg_vector_norm"),
])
def test_entry_for_op_accepts_every_spelling(spelling: str, name: str) -> None:
    entry = entry_for_op(spelling)
    assert entry is not None and entry.name == name


def test_entry_for_op_unknown_is_none() -> None:
    assert entry_for_op("aten.relu") is None
    assert entry_for_op("ReluBackward0") is None


@pytest.mark.parametrize(("spelling", "name"), [
    ("CrossEntropyLoss", "CrossEntropyLoss"), ("cross_entropy", "CrossEntropyLoss"),
    ("F.cross_entropy", "CrossEntropyLoss"), ("ctc_loss", "CTCLoss"), ("kl_div", "KLDivLoss"),
    ("binary_cross_entropy_with_logits", "BCEWithLogitsLoss"), ("BCELoss", "BCELoss"),
])
def test_entry_for_loss(spelling: str, name: str) -> None:
    entry = entry_for_loss(spelling)
    assert entry is not None and entry.name == name and entry.kind == "loss"


def test_loss_for_op_maps_runtime_ops_back_to_losses() -> None:
    nll = {e.name for e in loss_for_op("aten.nll_loss_forward")}
    assert {"CrossEntropyLoss", "NLLLoss", "LinearCrossEntropyLoss"} <= nll
    assert {e.name for e in loss_for_op("NllLossBackward0")} >= {"CrossEntropyLoss", "NLLLoss"}
    assert [e.name for e in loss_for_op("aten._ctc_loss.default")] == ["CTCLoss"]
    assert [e.name for e in loss_for_op("BinaryCrossEntropyBackward0")] == ["BCELoss"]
    assert loss_for_op("aten.relu") == ()


def test_conditions_for_a_phase() -> None:
    sqrt = entry_for_op("aten.sqrt")
    assert [c.id for c in sqrt.conditions_for("backward")] == ["negative", "zero_gradient"]
    assert [c.id for c in sqrt.conditions_for("forward")] == ["negative"]
    assert sqrt.condition("zero_gradient").check == "input_zero"
    with pytest.raises(KeyError):
        sqrt.condition("nope")


def test_fix_placeholders_are_filled() -> None:
    log = entry_for_op("aten.log").condition("nonpositive")
    text = log.fix_text(where="aten.log in feat (model.py:12)", who="samples 3, 5")
    assert text.startswith("aten.log in feat (model.py:12) gets 0 or a negative number for samples 3, 5")


def test_the_yaml_file_is_where_the_loader_reads() -> None:
    assert table_path().name == "table.yaml" and table_path().exists()


# ------------------------------------------------------------------------------------------------ validation
_GOOD = """
version: 1
entries:
- name: log
  kind: op
  phase: both
  conditions:
  - id: nonpositive
    when: input <= 0
    phase: both
    cause: numerical_domain
    check: input_nonpositive
    fix: clamp {where}
"""


def test_a_minimal_table_parses() -> None:
    table = parse_table(_GOOD)
    assert table.entry_for_op("LogBackward0").conditions[0].fix_text(where="here") == "clamp here"


@pytest.mark.parametrize(("change", "message"), [
    (("cause: numerical_domain", "cause: cosmic_rays"), "unknown cause 'cosmic_rays'"),
    (("    fix: clamp {where}\n", ""), "missing 'fix'"),
    (("check: input_nonpositive", "check: no_such_check"), "unknown check 'no_such_check'"),
    (("phase: both\n    cause", "phase: sideways\n    cause"), "unknown phase 'sideways'"),
    (("  phase: both\n  conditions", "  phase: forward\n  conditions"), "outside the entry's phase"),
    (("fix: clamp {where}", "fix: clamp {there}"), "unknown placeholder(s) ['there']"),
    (("kind: op", "kind: module"), "unknown kind 'module'"),
    (("    when: input <= 0\n", ""), "missing 'when'"),
    (("version: 1", "version: 2"), "unsupported table version"),
    (("  - id: nonpositive\n", "  - id: nonpositive\n    colour: red\n"), "unknown field(s) ['colour']"),
])
def test_malformed_tables_are_refused_with_a_clear_message(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in _GOOD
    with pytest.raises(TableError, match=None) as info:
        parse_table(_GOOD.replace(old, new, 1))
    assert message in str(info.value)


def test_entry_phase_must_match_its_conditions() -> None:
    text = _GOOD.replace("    phase: both\n    cause", "    phase: forward\n    cause")
    with pytest.raises(TableError, match="conditions cover 'forward'"):
        parse_table(text)


def test_a_name_claimed_twice_is_refused() -> None:
    twice = _GOOD + _GOOD.split("entries:\n", 1)[1].replace("name: log", "name: other\n  aliases: [log_]")
    with pytest.raises(TableError, match="claimed by both log and other"):
        parse_table(twice)


def test_an_entry_without_conditions_needs_a_note() -> None:
    bare = "version: 1\nentries:\n- name: atan2\n  kind: op\n  phase: both\n  conditions: []\n"
    with pytest.raises(TableError, match="needs a note"):
        parse_table(bare)
    with pytest.raises(TableError, match="'conditions' must be a list, not 3"):
        parse_table(bare.replace("[]", "3"))
    with pytest.raises(TableError, match="missing 'conditions'"):
        parse_table(bare.replace("  conditions: []\n", ""))
    assert parse_table(bare + "  note: finite\n").entries[0].safe


def test_not_yaml_is_refused() -> None:
    with pytest.raises(TableError, match="not valid YAML"):
        parse_table("entries: [unclosed")
