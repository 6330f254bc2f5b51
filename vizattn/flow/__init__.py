"""Where the whole network looks: attention rollout and class relevance through windowed, dilated,
shifted and merged stages, exactly, from the patterns' key tables (docs/semantics.md §9).

``rollout(model, images)`` (Abnar & Zuidema 2020) and ``relevance(model, images, target)`` (Chefer
et al. 2021) return a ``Flow``: ``grid [B, h, w]`` over the first attention layer's tokens,
``pixels [B, H, W]`` over the input, per-layer ``maps``, ``depth(d)`` (the first ``d`` layers
alone) and ``column(layer, i, j)`` (which pixels one token draws on).

>>> import torch; from vizattn import flow, models
>>> _ = torch.manual_seed(0)
>>> f = flow.rollout(models.create("maxvit"), torch.rand(1, 3, 64, 64))
>>> f.kinds, f.grids
(('block', 'grid', 'block', 'grid', 'block', 'grid'), ((16, 16), (16, 16), (8, 8), (8, 8), (4, 4), (4, 4)))
"""

from .maps import FUSIONS, Flow, relevance, rollout

__all__ = ["Flow", "rollout", "relevance", "FUSIONS"]
