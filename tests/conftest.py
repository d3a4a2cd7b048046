"""Suite-wide settings: small thread pools keep the suite predictable on a 2-core machine."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
