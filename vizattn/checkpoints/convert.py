"""``from_timm``: a timm model object of a supported family -> the same network in vizattn's layers.

The architecture is read off the timm object (widths, depths, heads, window / partition sizes,
token prefix, norms' eps, head), built with the builders of ``vit``, ``swin`` and ``maxvit``, and
its state dict goes through the same converters as the published checkpoints. Every part is
checked by type first: one vizattn has no layer for (a hybrid patch embedding, QK-norm, SwiGLU,
attention pooling, MaxViT's relative-position MLP, ...) is a ``ValueError`` naming it. Then one
forward pass of a random image through both models (eval mode, no gradients) must agree within
float32 tolerance, else a ``ValueError`` names the largest difference. timm itself is never
imported here: the families are recognised by their class names.
"""

from __future__ import annotations

import torch
from torch import nn

from . import files, maxvit, swin, vit

__all__ = ["from_timm", "FAMILIES", "TOLERANCE"]

FAMILIES = ("VisionTransformer (ViT, DeiT incl. distilled, register tokens / DINOv2)", "SwinTransformer (v1)",
            "MaxxVit (MaxViT, TF-ported weights)")
TOLERANCE = dict(rtol=1e-4, atol=1e-4)  # float32 after tens of layers; atol relative to the largest output


def _refuse(module, where: str) -> ValueError:
    return ValueError(f"from_timm: {where} is a {type(module).__name__}, which vizattn has no layer for; "
                      f"supported timm families: {'; '.join(FAMILIES)}")


def _need(module, names, where: str):
    """``module`` if its class (or a base) is one of ``names``, else the refusal."""
    names = (names,) if isinstance(names, str) else names
    if not any(c.__name__ in names for c in type(module).__mro__):
        raise _refuse(module, where)
    return module


def _gelu(act, where: str) -> str:
    """vizattn's ``gelu`` option for timm's activation module: exact ("none") or tanh-approximated."""
    if type(act).__name__ == "GELUTanh":
        return "tanh"
    return _need(act, "GELU", where).approximate


def _ratio(hidden: int, dim: int) -> float:
    return (hidden + 0.5) / dim  # int(dim * ratio) == hidden, free of float rounding


def _classes(head) -> int:
    """The classes of a Linear classifier; 0 for none (``num_classes=0``: an Identity)."""
    if isinstance(head, nn.Linear):
        return head.out_features
    _need(head, "Identity", "the head")
    return 0


def _vit(model):
    embed = _need(model.patch_embed, "PatchEmbed", "the patch embedding (patch_embed)")
    for module, where in ((embed.norm, "patch_embed.norm"), (model.norm_pre, "norm_pre"),
                          (model.patch_drop, "patch_drop")):
        if not isinstance(module, (nn.Identity, nn.Dropout)) and type(module).__name__ != "PatchDropout":
            raise _refuse(module, where)
    if getattr(model, "attn_pool", None) is not None:
        raise _refuse(model.attn_pool, "the attention pooling (global_pool='map')")
    if model.pos_embed is None or getattr(embed, "dynamic_img_pad", False) or model.global_pool not in ("token", "avg"):
        raise ValueError(f"from_timm: a VisionTransformer needs learned position embeddings, no dynamic padding and "
                         f"global_pool 'token' or 'avg'; got pos_embed={model.pos_embed is not None}, "
                         f"dynamic_img_pad={getattr(embed, 'dynamic_img_pad', False)}, "
                         f"global_pool={model.global_pool!r}")
    block = model.blocks[0]
    for i, b in enumerate(model.blocks):
        _need(b, "Block", f"blocks.{i}")
        _need(b.attn, "Attention", f"blocks.{i}.attn")
        _need(b.mlp, "Mlp", f"blocks.{i}.mlp")
        for name in ("q_norm", "k_norm", "norm"):
            part = getattr(b.attn, name, None)
            if part is not None and not isinstance(part, nn.Identity):
                raise _refuse(part, f"blocks.{i}.attn.{name}")
        if not isinstance(getattr(b.mlp, "norm", nn.Identity()), nn.Identity):
            raise _refuse(b.mlp.norm, f"blocks.{i}.mlp.norm")
        for name in ("norm1", "norm2"):
            _need(getattr(b, name), "LayerNorm", f"blocks.{i}.{name}")
    dim, distilled = model.embed_dim, getattr(model, "dist_token", None) is not None
    ls = block.ls1 if not isinstance(block.ls1, nn.Identity) else None
    fc_norm = not isinstance(model.fc_norm, nn.Identity)
    ours = vit.VisionTransformer(
        dim=dim, depth=len(model.blocks), heads=block.attn.num_heads, patch=embed.patch_size, img_size=embed.img_size,
        classes=_classes(model.head), mlp_ratio=_ratio(block.mlp.fc1.out_features, dim), eps=block.norm1.eps,
        class_token=model.cls_token is not None, dist_token=distilled, reg_tokens=model.num_reg_tokens,
        pos_prefix=not model.no_embed_class, dynamic=model.dynamic_img_size, pool=model.global_pool,
        fc_norm=fc_norm, final_norm=fc_norm or not isinstance(model.norm, nn.Identity),
        qkv_bias=block.attn.qkv.bias is not None, init_values=None if ls is None else 1.0,
        gelu=_gelu(block.mlp.act, "blocks.0.mlp.act"))
    return ours, dict(model.state_dict()), tuple(embed.img_size)


def _swin(model):
    embed = _need(model.patch_embed, "PatchEmbed", "the patch embedding (patch_embed)")
    _need(embed.norm, "LayerNorm", "patch_embed.norm")
    pool = getattr(model.head.global_pool, "pool_type", None)
    if pool != "avg":
        raise ValueError(f"from_timm: a SwinTransformer needs global_pool 'avg'; got {pool!r}")
    windows, heads = [], []
    for i, stage in enumerate(model.layers):
        if not isinstance(stage.downsample, nn.Identity):
            _need(stage.downsample, "PatchMerging", f"layers.{i}.downsample")
        for j, b in enumerate(stage.blocks):
            _need(b, "SwinTransformerBlock", f"layers.{i}.blocks.{j}")
            _need(b.attn, "WindowAttention", f"layers.{i}.blocks.{j}.attn")
            _need(b.mlp, "Mlp", f"layers.{i}.blocks.{j}.mlp")
            if b.attn.qkv.out_features != 3 * b.norm1.normalized_shape[0]:
                raise ValueError(f"from_timm: layers.{i}.blocks.{j}.attn has head_dim * heads != dim (timm's "
                                 "head_dim option); vizattn's window attention splits dim into the heads")
        windows.append(tuple(stage.blocks[0].window_size))
        heads.append(stage.blocks[0].attn.num_heads)
    block = model.layers[0].blocks[0]
    dim = embed.proj.out_channels
    ours = swin.Swin(dim=dim, depths=tuple(len(s.blocks) for s in model.layers), heads=tuple(heads),
                     patch=embed.patch_size[0], mlp_ratio=getattr(block, "mlp_ratio", block.mlp.fc1.out_features / dim),
                     classes=_classes(model.head.fc), stage_windows=windows)
    return ours, swin.from_reference(model.state_dict()), tuple(embed.img_size)


def _maxvit(model):
    _need(model.stem.conv1, "Conv2dSame", "stem.conv1 (MaxViT's TF 'same' padding)")
    head = _need(model.head, "NormMlpClassifierHead", "the head")
    _need(head.pre_logits, "Sequential", "head.pre_logits")
    if not isinstance(model.norm, nn.Identity) or getattr(head.global_pool, "pool_type", None) != "avg":
        raise ValueError("from_timm: a MaxxVit needs the head's own norm and 'avg' pooling (the TF MaxViT head)")
    for i, stage in enumerate(model.stages):
        for j, b in enumerate(stage.blocks):
            where = f"stages.{i}.blocks.{j}"
            _need(b, "MaxxVitBlock", where)
            _need(b.conv, "MbConvBlock", f"{where}.conv")
            if b.conv.se_early is not None or not isinstance(b.conv.down, nn.Identity):
                raise ValueError(f"from_timm: {where}.conv strides or gates in a way vizattn's MBConv does not")
            for part in ("attn_block", "attn_grid"):
                p = _need(getattr(b, part), "PartitionAttentionCl", f"{where}.{part}")
                _need(p.attn.rel_pos, "RelPosBiasTf", f"{where}.{part}.attn.rel_pos")
                if p.attn.head_first or not isinstance(p.ls1, nn.Identity):
                    raise ValueError(f"from_timm: {where}.{part} has head-first qkv or LayerScale, which vizattn's "
                                     "MaxViT block does not")
    first = model.stages[0].blocks[0]
    size = first.attn_block.partition_size
    stem = (model.stem.conv1.out_channels, model.stem.conv2.out_channels)
    tf = dict(bn_eps=model.stem.norm1.eps, ln_eps=first.attn_block.norm1.eps, padding="same",
              gelu=_gelu(first.attn_block.mlp.act, "the MLP's activation"))
    ours = maxvit.MaxViT(stem=stem[1] if stem[0] == stem[1] else stem,
                         dims=tuple(s.blocks[0].conv.conv3_1x1.out_channels for s in model.stages),
                         depths=tuple(len(s.blocks) for s in model.stages), head_dim=first.attn_block.attn.dim_head,
                         size=size[0] if size[0] == size[1] else size, classes=_classes(head.fc),
                         head_hidden=head.pre_logits.fc.out_features, tf=tf)
    return ours, maxvit.from_reference(model.state_dict()), tuple(model.img_size)


_CONVERTERS = {"VisionTransformer": _vit, "SwinTransformer": _swin, "MaxxVit": _maxvit}


def _self_check(theirs: nn.Module, ours: nn.Module, size, name: str) -> None:
    """One random image through both models; ValueError naming the largest difference beyond TOLERANCE."""
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    training = theirs.training
    theirs.eval()
    try:
        with torch.no_grad():
            expected, got = theirs(x), ours(x)
    finally:
        theirs.train(training)
    if expected.shape != got.shape:
        raise ValueError(f"from_timm({name}): output shapes differ: timm {tuple(expected.shape)}, "
                         f"vizattn {tuple(got.shape)}")
    atol = TOLERANCE["atol"] * max(1.0, float(expected.abs().max()))
    excess = (got - expected).abs() - atol - TOLERANCE["rtol"] * expected.abs()
    if bool((excess > 0).any()) or not bool(got.isfinite().all()):
        where = int((got - expected).abs().nan_to_num(float("inf")).argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(where), expected.shape))
        raise ValueError(f"from_timm({name}): the converted model differs from the timm model beyond float32 "
                         f"tolerance (rtol {TOLERANCE['rtol']}, atol {atol:.2g}): largest difference "
                         f"{float((got - expected).abs().flatten()[where]):.3g} at output {index} "
                         f"(timm {float(expected.flatten()[where]):.6g}, vizattn {float(got.flatten()[where]):.6g})")


def from_timm(model: nn.Module) -> nn.Module:
    """The timm ``model`` (ViT / DeiT / DINOv2, Swin v1, MaxViT-TF; any size, resolution and head, ``num_classes=0``
    included) in vizattn's layers with its weights, in eval mode, checked against it on a random image.

    ``ValueError`` for another family or a part vizattn has no layer for (naming it and the
    supported families), and if the outputs differ beyond float32 tolerance (naming the largest
    difference). The model is not changed (its train/eval mode is restored).

    >>> from torch import nn
    >>> from_timm(nn.Conv2d(3, 8, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: from_timm: the model is a Conv2d, which vizattn has no layer for; supported timm families: ...
    """
    family = next((c.__name__ for c in type(model).__mro__ if c.__name__ in _CONVERTERS), None)
    if family is None or not type(model).__module__.startswith("timm."):
        raise _refuse(model, "the model")
    name = type(model).__name__
    ours, state, size = _CONVERTERS[family](model)
    files.check(ours.state_dict(), state, f"from_timm({name})")
    ours.load_state_dict(state)
    ours.eval()
    _self_check(model, ours, size, name)
    return ours
