"""diagnose(): control run, localization, replay matrix, sample search, verdict — within a pass budget."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanprobe.batches import ModelCall, batch_size, cast_floating, select_samples
from nanprobe.diagnosis.audit import audit_config
from nanprobe.diagnosis.bisect import SampleSearch, concat_batches, find_samples
from nanprobe.diagnosis.dynamics import BrokenStep, Divergence, analyze, broken_by_step
from nanprobe.diagnosis.flow import Flow, OpEvent, storage_key, trace_back
from nanprobe.diagnosis.instrument import HookedRun, module_hooks
from nanprobe.diagnosis.layers import assign_layer_roles
from nanprobe.diagnosis.localize import Localizer
from nanprobe.diagnosis.optimizer import nonfinite_state, optimizer_findings
from nanprobe.diagnosis.origin import origin_record
from nanprobe.diagnosis.replay import Replay, dropout_sites, model_dtypes, plan_replays
from nanprobe.diagnosis.root import find_root
from nanprobe.diagnosis.samples import describe_samples, masked_positions
from nanprobe.diagnosis.verdict import Facts, Measured, decide
from nanprobe.errors import InputError, ModelRaised
from nanprobe.execution import Execution, Executor, Mode, OutOfTime, parse_mode
from nanprobe.kinds import nonfinite_tensors, tensor_kinds
from nanprobe.knowledge import entry_for_loss, entry_for_op, loss_for_op, run_check
from nanprobe.report import INPUT, LatentEntry, ReplayEntry, Report, display_name
from nanprobe.rng import RNGState, forked_rng
from nanprobe.sentinel import check_finite, tensor_leaves

__all__ = ["diagnose", "pass_budget"]


def pass_budget(batch_size: int) -> int:
    """Most forward passes one diagnosis of a failing batch of ``batch_size`` samples may cost."""
    return int(2 * math.log2(max(batch_size, 1))) + 12


MIN_DEFERRAL_PASSES = 4
SMALL_MODEL_BYTES = 256 * 2**20
"""A replay may copy the whole model only below this size (the others run the origin module alone)."""
"""With a time budget, a diagnosis may still take this many times its control run (a few forward passes)."""


def _word(res: Execution, kind: str) -> str:
    if res.error is not None:
        return f"raised {type(res.error).__name__}"
    if not res.nonfinite:
        return "finite"
    k = res.output.kind or (res.gradients.kind if res.gradients else None) or kind
    return f"still {'NaN' if k == 'nan' else 'Inf'}"


def _buffer_evidence(model: nn.Module, name: str) -> list[str]:
    """Buffers of the origin module that are finite but impossible, e.g. a negative BatchNorm running_var."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return []
    var = getattr(module, "running_var", None)
    if not isinstance(var, torch.Tensor) or not var.is_floating_point():
        return []
    negative = (var < 0).nonzero().flatten().tolist()
    if not negative:
        return []
    where = f"{name}.running_var" if name else "running_var"
    return [f"{where} is negative at channel(s) {negative[:8]}{' ...' if len(negative) > 8 else ''} "
            "-> eval-mode normalisation takes sqrt(var + eps) of it: NaN"]


def _bad_parameters(model: nn.Module) -> list[str]:
    return nonfinite_tensors([*model.named_parameters(), *model.named_buffers()])


def diagnose(
    model: nn.Module,
    batches: Sequence[Any],
    *,
    mode: str | Mode = Mode.EVAL,
    backward: bool = False,
    config: Mapping[str, Any] | None = None,
    rng_states: Sequence[RNGState | None] | None = None,
    replay: bool = True,
    repro_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    time_budget: float | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    layer_history: Sequence[Mapping[str, Any]] = (),
    param_history: Sequence[Mapping[str, Any]] = (),
    optimizer: Any | None = None,
) -> Report:
    """Find which batch goes non-finite, where (module, op, source line, samples) and why (a verdict with
    the evidence of a replay matrix). The model, torch's global switches and the caller's RNG are left
    exactly as they were. A model that raises on a batch in the control run is :class:`ModelRaised`.

    ``time_budget`` (seconds, or at least :data:`MIN_DEFERRAL_PASSES` times the failing batch's control run,
    whichever is longer) bounds the work after the control run: localization always runs, and replays and
    sample bisection that do not fit are skipped and named in ``Report.deferred``.

    ``history`` (a run's per-step rows: loss, grad_norm, lr, output_absmax, ..., as the monitor keeps them),
    with ``layer_history``/``param_history``, lets the verdict say whether the failure ends a divergence.
    ``optimizer`` (the one that trains ``model``): a non-finite parameter is checked against what the knowledge
    table says its step can do (e.g. an eps that is 0 in float16); its state is only read."""
    run_mode = parse_mode(mode)
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence) or not batches:
        raise InputError("batches must be a non-empty sequence of batches")
    with forked_rng():
        diagnoser = _Diagnoser(model, list(batches), run_mode, backward, config, rng_states, replay, repro_dir,
                               progress, time_budget)
        diagnoser.divergence = analyze(history, layer_history, param_history) if history else None
        diagnoser.broken = broken_by_step(history) if history else None
        diagnoser.optimizer = optimizer
        return diagnoser.run()


class _Diagnoser:
    def __init__(self, model: nn.Module, batches: list[Any], mode: Mode, backward: bool,
                 config: Mapping[str, Any] | None, rng_states: Sequence[RNGState | None] | None, replay: bool,
                 repro_dir: str | Path | None, progress: Callable[[str], None] | None,
                 time_budget: float | None) -> None:
        self.model, self.batches, self.mode, self.backward = model, batches, mode, backward
        self.config, self.rng_states, self.replay, self.repro_dir = config, rng_states, replay, repro_dir
        self.time_budget = time_budget
        self.divergence: Divergence | None = None
        self.optimizer: Any | None = None
        self.broken: BrokenStep | None = None
        self._origin_call: int | None = None
        self.deadline: float | None = None
        self._control_seconds = 0.0
        self.runner = Executor(model, mode=mode, backward=backward, progress=progress)
        self.diag = Report()

    # ------------------------------------------------------------------ top level
    def run(self) -> Report:
        d = self.diag
        d.nonfinite_parameters = _bad_parameters(self.model)
        if self.config:
            d.config_audit = audit_config(self.model, self.config)
        failing, states, control = self._controls()
        if failing is None:
            if self.replay:
                self._latent_only(self.batches[0], states[0])
            d.forward_passes = self.runner.passes
            return d
        d.status = "nonfinite"
        self._clean_controls = failing
        batch, rng = self.batches[failing], states[failing]
        size = batch_size(batch) or 1
        d.budget = pass_budget(size)
        if self.time_budget is not None:
            self.deadline = time.monotonic() + max(self.time_budget, MIN_DEFERRAL_PASSES * self._control_seconds)
            self.runner.deadline = self.deadline  # a run still going at the deadline stops at a module call
        loc, flow, loc_res = self._localize(batch, rng, size)
        hooked = self._hook_check(batch, rng, control) if self.replay and self._hooks_matter(loc_res) \
            and not self._out_of_time("the probe run") else None
        facts = self._first_nonfinite(failing, batch, size, control, loc, flow, loc_res, hooked)
        if self.replay:
            self._naive_hooks(batch, rng, facts)
            self._replay_matrix(batch, rng, loc, facts)
            search = self._samples(batch, rng, size, facts)
            self._batch_sizes(failing, batch, rng, search, facts)
        failing_rows = d.first_nonfinite.samples if d.first_nonfinite else []
        d.sample_details = describe_samples(batch, failing_rows, self.model, loc.attention)
        facts.masked = masked_positions(loc.attention, failing_rows or sorted({
            s for a in loc.attention for s in a["rows"]}))
        facts.divergence = self.divergence
        d.verdict = decide(facts)
        if d.first_nonfinite:
            d.verdict.evidence.extend(_buffer_evidence(self.model, d.first_nonfinite.module))
        if self.repro_dir is not None and flow.origin is not None:
            d.repro = self._repro(loc, flow, rng)
        d.forward_passes = self.runner.passes
        return d

    # ------------------------------------------------------------------ steps
    def _controls(self) -> tuple[int | None, list[RNGState], Execution | None]:
        states: list[RNGState] = []
        current = RNGState.capture()
        for i, batch in enumerate(self.batches):
            given = self.rng_states[i] if self.rng_states is not None and i < len(self.rng_states) else None
            state = given or current
            states.append(state)
            started = time.monotonic()
            try:
                res = self.runner.run(batch, state, label=f"control batch {i}", raise_errors=True)
            except Exception as e:  # the user's model raised on the user's batch
                first = (str(e).strip().splitlines() or ["no message"])[0]
                raise ModelRaised(f"the model raised {type(e).__name__} in control batch {i} "
                                  f"({self.runner.mode} mode): {first}") from e
            self._control_seconds = time.monotonic() - started
            if res.rng_after is not None:
                current = res.rng_after
            if res.nonfinite:
                return i, states, res
        return None, states, None

    def _localize(self, batch: Any, rng: RNGState, size: int) -> tuple[Localizer, Flow, Execution]:
        loc = Localizer(self.model, batch, size, backward=self.backward)
        res = self.runner.run(batch, rng, label="localize (dispatch mode + module tracker)", instrument=loc.active,
                              keep_output=True)
        params = loc.param_keys
        if res.output.nonfinite:
            keys = [storage_key(t) for _, t in tensor_leaves(res.value) if not bool(torch.isfinite(t).all())]
            flow = trace_back(loc.events, keys, param_keys=params, input_keys=loc.input_keys)
        elif res.gradients is not None and res.gradients.nonfinite:
            flow = trace_back(loc.events, [], param_keys=params, input_keys=loc.input_keys, phase="backward")
            backward_events = [e for e in loc.events if e.phase == "backward" and e.producer]
            flow.origin = backward_events[0] if backward_events else flow.origin
        else:
            flow = trace_back(loc.events, [], param_keys=params, input_keys=loc.input_keys)
            flow.origin = None
        res.value = None
        return loc, flow, res

    def _latent_only(self, batch: Any, rng: RNGState) -> None:
        loc = Localizer(self.model, batch, batch_size(batch))
        self.runner.run(batch, rng, label="localize (latent check)", instrument=loc.active)
        flow = trace_back(loc.events, [], param_keys=loc.param_keys, input_keys=loc.input_keys)
        self.diag.latent = _latent(flow)
        self.diag.layers = assign_layer_roles(loc.rows, loc.parents, None)
        self.diag.instrumentation = {"hooks_changed_result": False, "method": "dispatch_mode"}

    def _hooks_matter(self, loc_res: Execution) -> bool:
        """Whether the per-module-hook run can tell anything: a module with a native fast path that hooks
        switch off, or a localization that did not reproduce the value (the probe is then the fallback)."""
        fast = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
        return (loc_res.error is not None or not loc_res.nonfinite
                or any(isinstance(m, fast) for m in self.model.modules()))

    def _hook_check(self, batch: Any, rng: RNGState, control: Execution | None) -> HookedRun | None:
        holder = HookedRun()
        res = self.runner.run(batch, rng, label="probe (per-module hooks)",
                              instrument=lambda: module_hooks(self.model, holder, backward=self.backward))
        if isinstance(res.error, OutOfTime):  # says nothing about hooks: no comparison with the control
            self._out_of_time("the probe run")
            return None
        if res.error is not None and holder.method == "probe":
            holder = HookedRun(method="noop_hooks", error=f"{type(res.error).__name__}: {res.error}")
            res = self.runner.run(batch, rng, label="per-module hooks (no-op)",
                                  instrument=lambda: module_hooks(self.model, holder, backward=self.backward))
        holder.handles = []
        holder.error = holder.error or (None if res.error is None else str(res.error))
        self._hooked_nonfinite = res.nonfinite
        return holder

    def _first_nonfinite(self, index: int, batch: Any, size: int, control: Execution | None, loc: Localizer,
                         flow: Flow, loc_res: Execution, hooked: HookedRun | None) -> Facts:
        d = self.diag
        ctrl = control.output if control else None
        input_check = check_finite(batch, batch_size=size, prefix="batch")
        kind = (ctrl.kind if ctrl and ctrl.nonfinite else None) or (
            control.gradients.kind if control and control.gradients else None) or "nan"
        facts = Facts(kind=kind, batch_index=index, batch_size=size, bad_params=list(d.nonfinite_parameters))
        dtypes = model_dtypes(self.model, batch)
        for cand in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            if cand in dtypes:
                facts.dtype = str(cand).removeprefix("torch.")
                break
        facts.dropout_sites = [f"{n or '<root>'}.{a}={p:g}" for n, _, a, p in dropout_sites(self.model) if p > 0]
        facts.dropout_config = [a["message"] for a in d.config_audit if not a.get("reached", True)
                                and a.get("category") == "dropout"]
        facts.config_notes = [a["message"] for a in d.config_audit if a.get("reached") is False]
        hooks_changed = bool(hooked is not None and control is not None and control.nonfinite
                             and not self._hooked_nonfinite)
        facts.hooks_changed = hooks_changed
        d.instrumentation = {"hooks_changed_result": hooks_changed, "method": "dispatch_mode",
                             "probe": hooked.method if hooked else None,
                             "dispatch_reproduced": loc_res.nonfinite}
        if isinstance(loc_res.error, OutOfTime):
            self._out_of_time("the localization run")
            facts.extra_notes.append("localization deferred (time budget): the origin is where the monitor saw "
                                     "the value; `nanprobe replay` localizes it")
        elif loc_res.error is not None:
            facts.extra_notes.append(f"dispatch-mode localization raised {type(loc_res.error).__name__}: "
                                     f"{loc_res.error}; origin taken from the probe")
        elif not loc_res.nonfinite:
            facts.extra_notes.append("dispatch-mode localization run -> finite (the instrumentation changed the "
                                     "result); origin taken from the probe")
        d.first_nonfinite = origin_record(self.model, facts, flow=flow, loc=loc, ctrl=ctrl, input_check=input_check,
                                          bad_params=d.nonfinite_parameters, hooked=hooked)
        origin = flow.origin
        d.latent = _latent(flow)
        facts.latent = d.latent
        facts.leaf_unknown = flow.unknown_start
        params = dict([*self.model.named_parameters(), *self.model.named_buffers()])
        facts.bad_param_shapes = {n: tuple(params[n].shape) for n in facts.bad_params if n in params}
        facts.bad_buffers = {n for n, _ in self.model.named_buffers()} & set(facts.bad_params)
        if self.optimizer is not None and facts.bad_params:
            facts.optimizer = optimizer_findings(self.optimizer, self.model, facts.bad_params)
            facts.optimizer_state = nonfinite_state(self.optimizer, self.model, facts.bad_params)
        facts.broken = self.broken
        origin_call = origin.call if origin is not None else None
        if facts.leaf is not None and facts.leaf != INPUT:  # a parameter: the origin is its module's first call
            owner = d.first_nonfinite.module
            origin_call = next((r.index for r in loc.rows if r.module == owner), origin_call)
        if origin is not None:
            self._measure(loc, origin, facts)
        facts.root = find_root(loc.rows, loc.parents, origin_call, self.model)
        d.layers = assign_layer_roles(loc.rows, loc.parents, origin_call)
        self._origin_call = origin.call if origin is not None else None
        return facts

    def _measure(self, loc: Localizer, origin: OpEvent, facts: Facts) -> None:
        """Test the knowledge table's conditions for the producing op (and the loss it belongs to) on the op's
        actual inputs."""
        call = loc.op_calls.get(origin.index)
        loss = entry_for_loss(facts.module_type) if facts.module_type else None
        op_entry = entry_for_op(origin.op) if origin.op else None
        facts.entry = loss or op_entry
        if call is None:
            return
        floats = [t for t in call.floats() if t.numel()]
        finite = [float(t.abs().nan_to_num(0.0, 0.0, 0.0).amax()) for t in floats]
        facts.input_absmax = max(finite, default=None)
        facts.nonfinite_input_shapes = [tuple(t.shape) for t in floats if tensor_kinds(t)]
        entries = [e for e in (loss, op_entry) if e is not None]
        entries += [e for e in loss_for_op(call.op) if e not in entries]  # a loss called as a function
        for entry in entries:
            # an entry lists its conditions most specific first: the first that holds is the one measured
            for condition in entry.conditions_for(facts.phase):
                found = run_check(condition.check, call.op, call.args, call.kwargs) if condition.check else None
                if found is not None:
                    facts.measured.append(Measured(entry.name, condition, found))
                    break

    # ------------------------------------------------------------------ budgets
    def _out_of_time(self, what: str) -> bool:
        """True once the time budget is spent; the first time, the report says what was left undone."""
        if self.deadline is None or time.monotonic() < self.deadline:
            return False
        if self.diag.deferred is None:
            self.diag.deferred = (f"time budget reached after {self.runner.passes} forward pass(es), at {what}: "
                                  "the remaining replays and sample bisection are left to `nanprobe replay`")
        return True

    # ------------------------------------------------------------------ replay
    def _spent(self) -> int:
        """Passes spent on the failing batch (the clean batches' control runs before it do not count)."""
        return self.runner.passes - self._clean_controls

    def _naive_hooks(self, batch: Any, rng: RNGState, facts: Facts) -> None:
        """Plain per-module hooks on every module: fused fast paths (``nn.TransformerEncoderLayer``) refuse
        to run under them, so hook-based tools can hide the failure. Checked when a fused op is involved."""
        fused = ("aten._transformer_encoder_layer_fwd", "aten._native_multi_head_attention")
        layers = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
        if facts.hooks_changed or facts.leaf is not None or not (
                facts.op in fused or any(isinstance(m, layers) for m in self.model.modules())):
            return
        if self._out_of_time("the per-module hook check"):
            return
        holder = HookedRun(method="noop_hooks")
        res = self.runner.run(batch, rng, label="per-module hooks",
                              instrument=lambda: module_hooks(self.model, holder, backward=self.backward))
        if res.error is not None:
            return
        self.diag.replay.append(ReplayEntry("per-module hooks", {"module_hooks": True}, res.nonfinite,
                                            list(res.samples)))
        if res.nonfinite:
            facts.evidence.append(f"per-module hooks -> {_word(res, facts.kind)}")
            return
        facts.hooks_changed = True
        if self.diag.instrumentation is not None:
            self.diag.instrumentation["hooks_changed_result"] = True

    def _reserve(self, size: int) -> int:
        return (2 * math.ceil(math.log2(size)) + 2 if size > 1 else 0) + 1

    def _replay_matrix(self, batch: Any, rng: RNGState, loc: Localizer, facts: Facts) -> None:
        d = self.diag
        size = facts.batch_size
        if facts.leaf is not None:  # input or parameter already non-finite: replays cannot change that
            facts.evidence.append("replay matrix skipped: the non-finite value exists before any layer runs")
            return
        variants = plan_replays(self.model, batch, mode=self.mode, backward=self.backward, ops_seen=loc.ops_seen)
        for v in variants:
            if v.key == "upcast64" and facts.results.get("upcast") is False:
                continue
            if v.skipped:
                facts.evidence.append(f"{v.label}: skipped ({v.skipped})")
                continue
            if self._spent() + self._reserve(size) >= (d.budget or 0):
                facts.evidence.append(f"{v.label}: skipped (pass budget)")
                continue
            if self._out_of_time(v.label):
                facts.evidence.append(f"{v.label}: deferred (time budget)")
                continue
            self._run_variant(v, batch, rng, facts, loc)

    def _local_run(self, v: Replay, loc: Localizer, rng: RNGState
                   ) -> tuple[Any, nn.Module, RNGState, str] | str:
        """(inputs, module, RNG, label) for running ``v`` on the origin module alone, or why it cannot."""
        call = self._origin_call
        if call is None or call not in loc.calls:
            return "the producing module's inputs were not recorded"
        module, args, kwargs = loc.calls[call]
        name = loc.rows[call].module
        if v.dtype is not None:
            try:
                module = copy.deepcopy(module).to(v.dtype)
            except Exception as e:  # a module that cannot be copied: cast in place, restored after the run
                return f"{type(e).__name__}: {e}"
            args, kwargs = cast_floating(args, v.dtype), cast_floating(kwargs, v.dtype)
        state = RNGState(torch_cpu=loc.call_rng[call]) if call in loc.call_rng else rng
        return ModelCall(tuple(args), dict(kwargs)), module, state, display_name(name)

    def _run_variant(self, v: Replay, batch: Any, rng: RNGState, facts: Facts, loc: Localizer) -> None:
        contexts = v.contexts
        net: nn.Module | None = None
        data = batch
        local = self._local_run(v, loc, rng) if v.local and not self.backward else None
        if isinstance(local, tuple):
            data, net, rng, name = local
            facts.extra_notes.append(f"{v.label}: ran {name} alone, on the inputs recorded in the localization run")
        elif v.local and not self._small_model():  # never copy a big model whole
            facts.evidence.append(f"{v.label}: skipped ({local or 'backward: needs the whole model'}; the "
                                  "model is too large to copy)")
            return
        else:
            try:
                data = v.batch_fn(batch) if v.batch_fn else batch
                net = v.model_fn() if v.model_fn else None
            except Exception as e:  # e.g. a model that cannot be deep-copied: cast in place and restore
                if v.fallback is None:
                    facts.evidence.append(f"{v.label}: skipped ({type(e).__name__}: {e})")
                    return
                net, contexts = None, (*contexts, v.fallback)
        res = self.runner.run(data, rng, label=v.label, mode=v.mode, grad=v.grad, contexts=contexts, model=net)
        del net  # a local copy or an upcast model: gone before the next pass
        if isinstance(res.error, OutOfTime):
            self._out_of_time(v.label)
            facts.evidence.append(f"{v.label}: deferred (time budget)")
            return
        changes = dict(v.changes) | ({"scope": local[3]} if isinstance(local, tuple) else {})
        entry = ReplayEntry(v.label, changes, res.nonfinite, list(res.samples) if not isinstance(local, tuple) else [])
        if res.error is not None:
            entry.error = f"{type(res.error).__name__}: {res.error}"
        else:
            facts.results[v.key] = res.nonfinite
        self.diag.replay.append(entry)
        facts.evidence.append(f"{v.label} -> {_word(res, facts.kind)}")

    def _small_model(self) -> bool:
        """Small enough to copy whole for a replay (a few hundred MB of weights at most)."""
        size = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return size <= SMALL_MODEL_BYTES

    # ------------------------------------------------------------------ samples
    def _samples(self, batch: Any, rng: RNGState, size: int, facts: Facts) -> SampleSearch | None:
        if facts.leaf is not None or size <= 1:
            return None
        budget = (self.diag.budget or 0) - self._spent() - 1
        cands = facts.samples
        search = find_samples(lambda b, label, ch: self.runner.run(b, rng, label=label), batch, cands,
                              budget=max(budget, 0), kind=facts.kind,
                              stop=lambda: self._out_of_time("the sample bisection"))
        self.diag.replay.extend(search.replay)
        facts.evidence.extend(search.evidence)
        facts.singles_tried = bool(search.alone)
        if search.composition:
            facts.composition = True
            facts.evidence.append("no subset of the failing rows reproduces it on its own: it needs the rest of "
                                  "the batch")
        proven = search.minimal if search.minimal and (search.independent or set(search.minimal) < set(cands)
                                                      or not cands) else None
        if proven and proven != facts.samples:
            facts.samples = list(proven)
        if self.diag.first_nonfinite is not None and proven:
            self.diag.first_nonfinite.samples = list(proven)
        return search

    def _batch_sizes(self, index: int, batch: Any, rng: RNGState, search: SampleSearch | None,
                     facts: Facts) -> None:
        if facts.leaf is not None or self._spent() >= (self.diag.budget or 0):
            return
        if self._out_of_time("the batch-size replay"):
            return
        size = facts.batch_size
        rows = (search.minimal if search and search.minimal else None) or list(range(size))
        core = select_samples(batch, rows) if len(rows) < size else batch
        donors = [j for j in range(len(self.batches)) if j != index]
        if donors:
            j = donors[0]
            other = self.batches[j]
            try:
                mixed = concat_batches(core, other)
            except Exception:  # structures differ
                return
            n = batch_size(mixed)
            label = f"samples {', '.join(map(str, rows[:8]))} mixed into batch {j} (a batch of {n})"
        elif size == 1:
            mixed = concat_batches(batch, batch)
            n = 2
            label = "the same sample twice (batch of 2)"
        else:
            return
        if n == len(rows):
            return
        res = self.runner.run(mixed, rng, label=label)
        bad_core = [i for i in res.samples if i < len(rows)]
        self.diag.replay.append(ReplayEntry(label, {"batch_size": n, "samples": rows}, res.nonfinite,
                                            [rows[i] for i in bad_core]))
        facts.evidence.append(f"{label} -> {_word(res, facts.kind)}")
        if res.error is None and not res.nonfinite:
            facts.rebatch_fixed = label + " -> finite"

    # ------------------------------------------------------------------ repro
    def _repro(self, loc: Localizer, flow: Flow, rng: RNGState) -> str | None:
        from nanprobe.diagnosis.repro import write_repro

        origin = flow.origin
        if origin is None or origin.call is None or origin.call not in loc.calls:
            return None
        module, args, kwargs = loc.calls[origin.call]
        if origin.call in loc.call_rng:
            rng = RNGState(torch_cpu=loc.call_rng[origin.call])
        try:
            path = write_repro(Path(self.repro_dir), module, args, kwargs, rng=rng, name=origin.module,
                               training=self.mode is Mode.TRAIN, grad=self.mode is Mode.TRAIN or self.backward,
                               fastpath=torch.backends.mha.get_fastpath_enabled())
        except Exception as e:  # pickling a user module can fail; the diagnosis still stands
            if self.diag.verdict is not None:
                self.diag.verdict.evidence.append(f"repro not written: {type(e).__name__}: {e}")
            return None
        return str(path)


def _latent(flow: Flow) -> list[LatentEntry]:
    seen: set[tuple[str, str, str]] = set()
    out: list[LatentEntry] = []
    for e in flow.latent:
        key = (e.module, e.kind, e.op)
        if key in seen:
            continue
        seen.add(key)
        out.append(LatentEntry(e.module, e.kind, e.op, e.phase))  # type: ignore[arg-type]
    return out
