"""Helpers shared by the test files (``from conftest import ...``; pytest puts tests/ on the path).

The slow references written from docs/semantics.md live in ``brute.py``, the awkward maps every
pattern is checked on in ``cases.py``; this file holds the small helpers that several test files
need: float64, seeded noise, seeded builds, randomised parameters, hook counts, the repository root,
the pixels of a drawn photo.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
D = torch.float64  # values are compared in float64


def generator(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (noise that does not touch the global RNG)."""
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int = 0, dtype=D) -> torch.Tensor:
    """Seeded standard normal noise of ``shape``."""
    return torch.randn(*shape, generator=generator(seed), dtype=dtype)


def build(factory, seed: int = 0) -> nn.Module:
    """``factory()`` under the global seed ``seed``, in float64."""
    torch.manual_seed(seed)
    return factory().double()


def randomise(module: nn.Module, seed: int = 1, std: float = 0.5) -> nn.Module:
    """Overwrite every parameter with noise (so identity inits and zero tables test nothing by luck)."""
    g = generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def all_hooks(model: nn.Module) -> int:
    """How many forward hooks and pre-hooks are registered anywhere in ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(getattr(m, "_forward_hooks_with_kwargs", {}))
               for m in model.modules())


def pixels(trace) -> np.ndarray:
    """The ``uint8 [S, S, 3]`` picture a ``go.Image`` trace shows, decoded from its PNG ``source``."""
    import PIL.Image  # scikit-image's dependency, as the photos are

    data = base64.b64decode(trace.source.split(",", 1)[1])
    return np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))


def as_float(z) -> np.ndarray:
    """A figure's values as floats: None (a gap in a heatmap) becomes NaN."""
    return np.asarray(z, dtype=float)


def count_forwards(model: nn.Module) -> list:
    """A list that grows by one on every forward call of ``model`` (a pre-hook that stays)."""
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls
