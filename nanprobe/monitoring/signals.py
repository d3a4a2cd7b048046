"""The cheap per-step signals a monitor records, each read back in the one host read it already makes.

* every watched call: the outputs' finiteness and their |max| (one ``aminmax`` per output: NaN and Inf
  propagate into it, so one pass answers both);
* after backward: the total gradient norm, one norm per optimizer parameter group and per parameter (kept
  for the last steps), and the loss scale of a GradScaler; a step the scaler skips on purpose (its
  intentional overflow) is recorded as skipped, not reported as a failure. When the model computes in a
  narrow float (float16: its own dtype, or autocast's) and no GradScaler is on, also the gradients' largest
  |value| (``grad_absmax``): the backward's values live in that dtype, and their headroom is what runs out;
* around ``optimizer.step()`` (hooks on the optimizer): the learning rate and the update-to-weight ratio,
  estimated on a fixed strided sample of each parameter (at most :data:`SAMPLE` values), so no copy of
  the weights is ever held (``weight_norm`` is that sample's norm after the step: its growth between steps is
  the weights'); and the clip ratio, the norm of the largest gradient as the step uses it over its norm after
  backward (the same strided sample, both unscaled): below 1 when something between the two clipped them
  (``clip_grad_norm_``, a framework's ``gradient_clip_val``/``max_grad_norm``).

Device-side values that are not needed at once (the update ratio) wait in a queue and travel with the next
read-back: no extra device sync per step.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from nanprobe.monitoring.history import History
from nanprobe.sentinel import tensor_leaves

__all__ = ["READ_LATE", "SAMPLE", "CallReading", "GradReading", "Signals"]

SAMPLE = 1024
PARAM_STEPS = 64  # steps of per-parameter gradient norms kept
READ_LATE = ("update_ratio", "clip_ratio", "weight_norm")
"""Signals queued on the device at the optimizer step and read back with the next step's values, so that no
step pays a host sync of its own: they reach a step's history row one step late."""


@dataclass
class CallReading:
    nonfinite: bool
    absmax: float | None
    dtype: torch.dtype | None
    flag: torch.Tensor | None = None  # device-side "any non-finite" (for the ranks' agreement, not read here)


@dataclass
class GradReading:
    total: float | None
    finite: bool
    scaler_skipped: bool


class Signals:
    """What a monitor records beyond its own checks; owns its optimizer hooks (removed by :meth:`detach`)."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.optimizer: Any | None = None
        self.scaler: Any | None = None
        self.param_history: deque[dict[str, Any]] = deque(maxlen=PARAM_STEPS)
        """``{"step": k, "norms": {parameter: gradient norm}}`` of the last steps with a backward."""
        self._hooks: list[RemovableHandle] = []
        self._queued: list[tuple[int, str, torch.Tensor]] = []
        self._before: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._at_backward: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (step, parameter, its sampled
        # gradient norm after backward, unscaled)
        self._depth, self._depth_step = 0, -1  # nesting of the optimizer's step hooks, and the step it began at
        self.errors: list[str] = []  # nanprobe's own failures inside the optimizer's step hooks (the first 3)
        self._step = 0

    # -- attaching -----------------------------------------------------------------------------------
    def attach(self, optimizer: Any | None = None, scaler: Any | None = None) -> None:
        """Watch ``optimizer.step()`` (learning rate, update ratio) and read ``scaler``'s loss scale."""
        if scaler is not None:
            self.scaler = scaler
        if optimizer is None or optimizer is self.optimizer:
            return
        self.detach_optimizer()
        self.optimizer = optimizer
        pre = getattr(optimizer, "register_step_pre_hook", None)
        post = getattr(optimizer, "register_step_post_hook", None)
        if callable(pre) and callable(post):
            self._hooks += [pre(self._guarded(self._before_step)), post(self._guarded(self._after_step))]

    def detach_optimizer(self) -> None:
        while self._hooks:
            self._hooks.pop().remove()
        self._before.clear()
        self.optimizer = None

    def at_step(self, step: int) -> None:
        self._step = step

    # -- readings ------------------------------------------------------------------------------------
    def read_call(self, step: int, output: Any, *, read: bool = True) -> CallReading:
        """The outputs' finiteness and |max|, and whatever waits in the queue, in one read-back. With
        ``read=False`` nothing is read (the ranks agree on the device flag first)."""
        parts, dtype = [], None
        for _, t in tensor_leaves(output):
            if t.numel() == 0:
                continue
            x = t.detach()
            x = x.abs() if x.is_complex() else x
            lo, hi = torch.aminmax(x.reshape(-1))
            parts += [lo, hi]
            dtype = dtype or x.dtype
        if not parts:
            return CallReading(False, None, None)
        device = parts[0].device
        mm = torch.stack([p.to(device=device, dtype=torch.float32) for p in parts])
        if not read:
            return CallReading(False, None, dtype, flag=~torch.isfinite(mm).all())
        values = self._read(step, mm)
        nonfinite = not all(math.isfinite(v) for v in values)
        absmax = None if nonfinite else max(abs(v) for v in values)
        if absmax is not None:
            self.history.log(step, {"output_absmax": absmax})
        return CallReading(nonfinite, absmax, dtype)

    def read_gradients(self, step: int, model: nn.Module, *, absmax: bool = False) -> GradReading | None:
        """Gradient norms (total, per optimizer group, per parameter) and the loss scale, in one read-back;
        with ``absmax`` (a narrow compute dtype and no GradScaler), also each gradient's largest |value|."""
        named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
        if not named:
            return None
        device = named[0][1].grad.device  # type: ignore[union-attr]
        grads = [p.grad.detach() for _, p in named]  # type: ignore[union-attr]
        norms = torch.stack([n.to(device) for n in _norms(grads)])
        total = torch.linalg.vector_norm(norms).reshape(1)
        groups = self._group_index([p for _, p in named])
        group_norms = [torch.linalg.vector_norm(norms[idx]).reshape(1) for idx in groups.values()]
        scale = self._scale()
        extra = [scale.reshape(1).to(device=device, dtype=torch.float32)] if scale is not None else []
        peaks = [torch.stack([m.to(device) for m in _norms(grads, math.inf)])] if absmax and scale is None else []
        values = self._read(step, torch.cat([norms, total, *group_norms, *extra, *peaks]))
        n = len(named)
        if peaks:
            values, maxes = values[:-n], values[-n:]
        per_param, total_value = values[:n], values[n]
        group_values = values[n + 1:n + 1 + len(groups)]
        scale_value = values[-1] if extra else None
        finite = math.isfinite(total_value)
        unscale = scale_value if scale_value and math.isfinite(scale_value) and scale_value > 0 else 1.0
        if self._unscaled():  # scaler.unscale_(optimizer) already ran (before clipping, as frameworks do)
            unscale = 1.0
        record: dict[str, Any] = {}
        if finite:
            record["grad_norm"] = total_value / unscale
            if len(groups) > 1:
                record.update({f"grad_norm/{name}": v / unscale for name, v in zip(groups, group_values)})
            row: dict[str, Any] = {"step": step, "norms": {name: v / unscale for (name, _), v
                                                           in zip(named, per_param)}}
            if peaks:
                largest = max(range(n), key=lambda i: maxes[i])
                record["grad_absmax"] = maxes[largest]
                row["largest_grad"] = named[largest][0]
            self.param_history.append(row)
        if scale_value is not None:
            record["loss_scale"] = scale_value
        if finite and self.optimizer is not None:  # the clip ratio follows the largest gradient (norm clipping
            # scales every gradient alike; value clipping cuts the largest first)
            largest = named[max(range(n), key=lambda i: per_param[i])][1]
            self._guarded(self._sample_at_backward)(step, largest, scale)
        skipped = not finite and scale_value is not None and self._scaler_enabled()
        if skipped:
            record["scaler_skipped"] = 1.0
        self.history.log(step, record)
        return GradReading(total_value / unscale if finite else None, finite, skipped)

    def log_lr(self, step: int) -> None:
        groups = getattr(self.optimizer, "param_groups", None)
        if groups:
            lr = groups[0].get("lr")
            if isinstance(lr, torch.Tensor):
                lr = float(lr)  # a tensor lr lives on the host unless the user put it elsewhere
            if isinstance(lr, (int, float)):
                self.history.log(step, {"lr": float(lr)})

    # -- internals -----------------------------------------------------------------------------------
    def _read(self, step: int, values: torch.Tensor) -> list[float]:
        """``values`` and the queued device scalars, read back at once; queued ones go to the history."""
        queued, self._queued = self._queued, []
        if not queued:
            return values.tolist()
        tail = torch.stack([t.reshape(()).to(device=values.device, dtype=torch.float32) for _, _, t in queued])
        joined = torch.cat([values.reshape(-1), tail]).tolist()
        n = values.numel()
        for (at, key, _), value in zip(queued, joined[n:]):
            self.history.log(at, {key: value})
        return joined[:n]

    def _group_index(self, params: list[nn.Parameter]) -> dict[str, list[int]]:
        where = {id(p): i for i, p in enumerate(params)}
        groups: dict[str, list[int]] = {}
        for g, group in enumerate(getattr(self.optimizer, "param_groups", None) or []):
            idx = [where[id(p)] for p in group.get("params", []) if id(p) in where]
            if idx:
                groups[str(group.get("name", g))] = idx
        return groups or {"all": list(range(len(params)))}

    def _scaler_enabled(self) -> bool:
        enabled = getattr(self.scaler, "is_enabled", None)
        return bool(callable(enabled) and enabled())

    def _unscaled(self) -> bool:
        """Whether the scaler has already unscaled the attached optimizer's gradients in this step."""
        states = getattr(self.scaler, "_per_optimizer_states", None)
        state = states.get(id(self.optimizer)) if isinstance(states, dict) and self.optimizer is not None else None
        stage = state.get("stage") if isinstance(state, dict) else None
        return getattr(stage, "name", None) == "UNSCALED"

    def _scale(self) -> torch.Tensor | None:
        scale = getattr(self.scaler, "_scale", None) if self._scaler_enabled() else None
        return scale if isinstance(scale, torch.Tensor) else None

    def _sampled(self) -> Iterable[torch.Tensor]:
        """Strided views of the trained parameters (``requires_grad``: frozen ones would only dilute the ratio).
        Not "those with a gradient": an optimizer stepped with a closure (Lightning, LBFGS) computes the
        gradients inside ``step()``, after this pre-hook."""
        for group in getattr(self.optimizer, "param_groups", None) or []:
            for p in group.get("params", []):
                if isinstance(p, torch.Tensor) and p.requires_grad and p.numel():
                    yield _strided(p)

    def _sample_at_backward(self, step: int, param: torch.Tensor, scale: torch.Tensor | None) -> None:
        sample = _grad_sample(param)
        if sample is not None:
            divisor = scale if scale is not None and not self._unscaled() else None
            self._at_backward = (step, param, sample if divisor is None else sample / divisor.to(sample.device))

    def _guarded(self, hook: Any) -> Any:
        """``hook`` run inside the user's ``optimizer.step()`` (or ``after_backward``): nanprobe's own failure there
        never becomes the user's. That step's measurements are dropped and the error kept (:attr:`errors`, the
        first 3)."""
        def run(*args: Any) -> None:
            try:
                hook(*args)
            except Exception as error:  # anything raised here is nanprobe's, not the run's
                self._before, self._at_backward, self._depth = [], None, 0
                if len(self.errors) < 3:
                    self.errors.append(f"{hook.__name__}: {type(error).__name__}: {error}")
        return run

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        # a subclass whose step() calls super().step() runs the hooks once per patched class, nested: only the
        # outermost pair measures, so that the ratio covers everything the user's step() did
        self._depth = self._depth + 1 if self._depth_step == self._step else 1
        self._depth_step = self._step
        if self._depth > 1:
            return
        self.log_lr(self._step)
        self._before = [(view, view.clone()) for view in self._sampled()]
        self._clip_ratio()  # with a closure (Lightning) the backward comes later: measured after the step

    def _clip_ratio(self) -> None:
        """Queue the clip ratio when this step's backward was read (the gradients now are what the step uses)."""
        at_backward, self._at_backward = self._at_backward, None
        if at_backward is not None and at_backward[0] == self._step:
            step, param, then = at_backward
            now = _grad_sample(param)
            if now is not None:
                self._queued.append((step, "clip_ratio", now / then.clamp_min(1e-30)))

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        if not _writes_grads(optimizer):  # SGD with Nesterov momentum adds into .grad during step()
            self._clip_ratio()
        self._at_backward = None
        before, self._before = self._before, []
        if not before:
            return
        # the strided views follow the parameters: after the step they hold the new values
        news = [new.float() for new, _ in before]
        steps = torch._foreach_sub(news, [old.float() for _, old in before])
        delta = torch.linalg.vector_norm(torch.stack(_norms(steps)))
        size = torch.linalg.vector_norm(torch.stack(_norms(news)))
        self._queued.append((self._step, "update_ratio", delta / size.clamp_min(1e-15)))  # READ_LATE, as are these
        self._queued.append((self._step, "weight_norm", size))


def _grad_sample(param: torch.Tensor) -> torch.Tensor | None:
    """The float32 norm of a strided sample of ``param``'s gradient (the same positions every time, so two of
    them compare), as a device scalar."""
    grad = getattr(param, "grad", None)
    if not isinstance(grad, torch.Tensor) or not grad.numel() or grad.is_sparse:
        return None
    return torch.linalg.vector_norm(_strided(grad), dtype=torch.float32)


def _strided(t: torch.Tensor) -> torch.Tensor:
    """At most :data:`SAMPLE` values of ``t``, evenly strided: a view, the same positions every step."""
    flat = t.detach().reshape(-1)
    return flat[:: max(1, flat.numel() // SAMPLE)]


def _writes_grads(optimizer: Any) -> bool:
    return any(group.get("nesterov") for group in getattr(optimizer, "param_groups", None) or [])


def _norms(tensors: list[torch.Tensor], order: float = 2) -> list[torch.Tensor]:
    """The float32 ``order``-norm of each tensor (``math.inf``: its largest |value|), batched per device and
    dtype (one kernel per group where the device has a fused one) instead of one norm call per tensor: the
    per-step cost grows slower with the parameter count."""
    return list(torch._foreach_norm(tensors, order, dtype=torch.float32))
