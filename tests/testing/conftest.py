"""Tiny models that misbehave on purpose, written into each pytester session as ``nanmodels.py``."""

from __future__ import annotations

import contextlib

import pytest

# pytester's in-process runs drop the modules first imported inside them; a second copy of the diagnose
# engine (imported lazily by the guard at failure time) would then mix with the first. Import it up front.
with contextlib.suppress(ImportError):
    import nanprobe.diagnosis
    import nanprobe.testing  # noqa: F401

MODELS = '''
import torch
from torch import nn


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


class Sqrt(nn.Module):
    def forward(self, x):
        return torch.sqrt(x)


class Net(nn.Module):
    """pre (identity Linear) -> act -> head. With Log, a row with a negative entry gives NaN (forward);
    with Sqrt, a row of zeros gives a non-finite gradient (backward)."""

    def __init__(self, act=None):
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.act = act if act is not None else Log()
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.pre.weight.copy_(torch.eye(4))
            self.pre.bias.zero_()

    def forward(self, x):
        return self.head(self.act(self.pre(x)))


class InfNet(nn.Module):
    """Emits +Inf (never NaN) for rows holding a zero: 1 / x."""

    def __init__(self):
        super().__init__()
        self.recip = Recip()

    def forward(self, x):
        return self.recip(x)


class Recip(nn.Module):
    def forward(self, x):
        return 1.0 / x


def good_batch():
    return torch.ones(4, 4)


def bad_batch(row=2):
    x = torch.ones(4, 4)
    x[row] = -1.0
    return x


def zero_row_batch(row=1):
    x = torch.ones(4, 4)
    x[row] = 0.0
    return x
'''


@pytest.fixture
def nan_pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester whose sessions can ``import nanmodels`` (the models above)."""
    pytester.makepyfile(nanmodels=MODELS)
    pytester.syspathinsert()
    return pytester
