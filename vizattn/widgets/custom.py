"""Your model in an explorer: what the explorers read from a model object they are given.

A model object is any ``nn.Module`` with vizattn attention layers (``vizattn.probe`` finds them):
``checkpoints.load``/``build``/``from_timm``, ``models.create``, or a stack of ``vizattn.layers`` of
your own. It takes ``images [1, 3, S, S]`` and returns anything; ``[1, classes]`` class scores get
names (``class_names``). From the model, without a browser:

- ``model_input``: the side ``S`` (``size=``, else ``model.config["img_size"]``, else
  ``model.img_size``, else ``DEFAULT_SIZE``) and whether pictures are ImageNet-normalised (the
  default, as every ``vizattn.checkpoints`` model takes them) or left in ``[0, 1]`` (a
  ``vizattn.models.Model``, which normalises inside its forward).
- ``forward``: one run in eval mode, a failure as ``ValueError`` naming the input it was given.
- ``class_names``: ImageNet's for 1000 classes, else the caller's ``labels``, else ``class k``.

>>> import torch; from torch import nn; from vizattn.layers import NeighborhoodAttention
>>> class Patches(nn.Module):  # images [B, 3, S, S] -> a channels-last map [B, S/8, S/8, 16]
...     def __init__(self):
...         super().__init__(); self.proj = nn.Conv2d(3, 16, 8, 8)
...     def forward(self, x):
...         return self.proj(x).permute(0, 2, 3, 1)
>>> stack = nn.Sequential(Patches(), NeighborhoodAttention(dim=16, heads=2, kernel_size=3))
>>> model_input(stack), tuple(forward(stack, torch.zeros(1, 3, 64, 64)).shape)
((224, True), (1, 8, 8, 16))
>>> model_input(nn.Linear(2, 2))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: model must hold vizattn attention layers ...; got a Linear with none
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import imagenet_classes
from ..layers.common import attention_layers

__all__ = ["DEFAULT_SIZE", "model_input", "forward", "class_names"]

DEFAULT_SIZE = 224  # a model that states no input size: ImageNet's evaluation size


def model_input(model, size: int | None = None, normalise: bool | None = None) -> tuple[int, bool]:
    """``(S, normalise)``: the side of the square pictures ``model`` takes and whether they are
    ImageNet-normalised (see the module); ``ValueError`` for a model without vizattn attention layers."""
    from ..models import Model

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a model name or a torch.nn.Module; got {type(model).__name__}")
    if not attention_layers(model):
        raise ValueError(f"model must hold vizattn attention layers (modules of vizattn.layers, e.g. "
                         f"NeighborhoodAttention; a timm model: convert it with vizattn.checkpoints.from_timm "
                         f"first); got a {type(model).__name__} with none")
    if size is None:
        config = getattr(model, "config", None)
        size = config.get("img_size") if isinstance(config, dict) else None
        size = getattr(model, "img_size", None) if size is None else size
        size = DEFAULT_SIZE if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int (the side of the square input); got size={size!r}")
    if normalise is None:
        normalise = not isinstance(model, Model)
    if not isinstance(normalise, bool):
        raise ValueError(f"normalise must be True, False or None (decided by the model); got normalise={normalise!r}")
    return size, normalise


def forward(model: nn.Module, x: torch.Tensor):
    """``model(x)`` in eval mode (the model's mode put back), no gradients; an error as ``ValueError``."""
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            return model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"the model did not run on images {list(x.shape)}: {type(err).__name__}: {err} (an explorer's "
                         f"model takes images [1, 3, S, S]; give its side S with size=)") from None
    finally:
        model.train(training)


def class_names(output, labels=None) -> tuple[str, ...] | None:
    """The names of the classes scored by ``output`` ``[1, classes]``: ``labels`` if given, else
    ImageNet's for 1000, else ``class 0``, ``class 1``, ...; None for an output that is not class scores
    (``labels`` then must be None). ``ValueError`` for labels that do not fit.

    >>> class_names(torch.zeros(1, 2), ["cat", "dog"]), class_names(torch.zeros(1, 1000))[281]
    (('cat', 'dog'), 'tabby')
    """
    scores = isinstance(output, torch.Tensor) and output.dim() == 2 and output.shape[0] == 1
    shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if labels is not None:
        labels = tuple(labels) if not isinstance(labels, str) else None
        if labels is None or not all(isinstance(n, str) for n in labels):
            raise ValueError("labels must be a sequence of class names (str), one per output class")
        if not scores or output.shape[1] != len(labels):
            raise ValueError(f"labels must name every class of the output: {len(labels)} labels for an output "
                             f"{shape} (class scores are [1, classes])")
        return labels
    if not scores:
        return None
    return imagenet_classes() if output.shape[1] == 1000 else tuple(f"class {k}" for k in range(output.shape[1]))

