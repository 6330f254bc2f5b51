"""Every size in vizattn.checkpoints: the published table's parameters and FLOPs, and equal to its reference.

Parameters and FLOPs are counted on the full model built on the meta device (no memory, no
compute): FLOPs as ``models.Model.summary`` counts them (``torch.utils.flop_counter`` on the
explicit path: matrix products and convolutions, 2 per multiply-add), halved to multiply-adds,
which is what the papers' tables call FLOPs. Tolerances: parameters within 1% or one unit of
the table's last printed digit (DeiT-Ti's 5.7 M is printed 5 M; Swin-T's 28.3 M, 28 M); FLOPs
within 2% or half a unit of the last digit (DeiT-Ti 1.25 G, printed 1.3 G), given how counters
differ on what they leave out (norms, softmax, elementwise ops).

Exactness: the sizes already compared in full by tests/test_checkpoints.py (the tiny/mini
models) are not repeated; every other size is compared with its reference (timm, or the
transcriptions in tests/reference) at the published widths, heads, kernels, dilations and
windows, on 2 CPU cores with reduced depth (``REDUCED``: the first blocks of each stage) and, for
DiNAT-L at 384 x 384, whose 96 x 96 first level makes the dense reference 9,216 x 9,216 per
head, also with reduced width (1 head of 64 channels at the first level).
"""

from __future__ import annotations

import pytest
import torch
from reference import randomise
from test_checkpoints import REFERENCES, TOLERANCE, timm
from torch.utils.flop_counter import FlopCounterMode

from vizattn import checkpoints
from vizattn.layers import explicit

NAMES = checkpoints.list()


@pytest.mark.parametrize("name", NAMES)
def test_params_and_flops_match_the_papers_table(name):
    spec = checkpoints.CHECKPOINTS[name]
    with torch.device("meta"):
        model = spec.build().eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), explicit(model), counter:
        logits = model(torch.zeros(1, 3, spec.size, spec.size, device="meta"))
    assert logits.shape == (1, 1000)
    gmacs = counter.get_total_flops() / 2e9
    unit = 1.0 if float(spec.params).is_integer() else 0.1
    assert abs(params - spec.params) < max(0.01 * spec.params, unit), (params, spec.params)
    assert abs(gmacs - spec.gflops) <= max(0.02 * spec.gflops, 0.05), (gmacs, spec.gflops)


# the official per-layer dilations (classification/dinat.py), of which a reduced model takes the first ones
DINAT_224 = [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5]
DINAT_384 = [[1, 13, 1], [1, 6, 1, 6], [1, 3] * 9, [1] * 5]
NAT_REFERENCE = {  # name: reference kwargs (classification/nat.py, dinat.py)
    "nat_tiny": dict(embed_dim=64, num_heads=(2, 4, 8, 16), mlp_ratio=3),
    "nat_small": dict(embed_dim=96, num_heads=(3, 6, 12, 24), mlp_ratio=2, layer_scale=1e-5),
    "nat_base": dict(embed_dim=128, num_heads=(4, 8, 16, 32), mlp_ratio=2, layer_scale=1e-5),
    "dinat_tiny": dict(embed_dim=64, num_heads=(2, 4, 8, 16), mlp_ratio=3, dilations=DINAT_224),
    "dinat_small": dict(embed_dim=96, num_heads=(3, 6, 12, 24), mlp_ratio=2, dilations=DINAT_224),
    "dinat_base": dict(embed_dim=128, num_heads=(4, 8, 16, 32), mlp_ratio=2, layer_scale=1e-5, dilations=DINAT_224),
    "dinat_large": dict(embed_dim=192, num_heads=(6, 12, 24, 48), mlp_ratio=2, dilations=DINAT_224),
    "dinat_large_384": dict(embed_dim=64, num_heads=(1, 2, 4, 8), mlp_ratio=2, dilations=DINAT_384),
    "dinat_large_384_11x11": dict(embed_dim=64, num_heads=(1, 2, 4, 8), mlp_ratio=2, dilations=DINAT_224,
                                  kernel_size=11),
}
CROSSFORMER_REFERENCE = {  # configs/crossformer/*_patch4_group7_224.yaml
    "crossformer_small": dict(embed_dim=96, num_heads=(3, 6, 12, 24)),
    "crossformer_base": dict(embed_dim=96, num_heads=(3, 6, 12, 24)),
    "crossformer_large": dict(embed_dim=128, num_heads=(4, 8, 16, 32)),
}
REDUCED = {"deit": dict(depth=2), "nat": dict(depths=(2, 2, 2, 1)), "dinat": dict(depths=(2, 2, 2, 1)),
           "crossformer": dict(depths=(2, 2, 2, 2)), "maxvit": dict(depths=(1, 1, 1, 1)),
           "swin": dict(depths=(2, 2, 2, 2))}
SIZES = [n for n in NAMES if n not in REFERENCES]


def reduced(name):
    """(reference, vizattn model) at the reduced depth (and, for DiNAT-L 384, width), equal random weights."""
    spec, changes = checkpoints.CHECKPOINTS[name], REDUCED[name.split("_")[0]]
    torch.manual_seed(0)
    if name in NAT_REFERENCE:
        from reference import nat

        kwargs = dict(NAT_REFERENCE[name])
        depths = changes["depths"]
        if "dilations" in kwargs:
            kwargs["dilations"] = [level[:d] for level, d in zip(kwargs["dilations"], depths)]
        reference = nat.NAT(depths=depths, **kwargs)
        width = dict(dim=64, heads=(1, 2, 4, 8)) if "384" in name else {}
        ours = spec.build(**changes, **width)
    elif name in CROSSFORMER_REFERENCE:
        from reference import crossformer

        reference = crossformer.CrossFormer(depths=changes["depths"], **CROSSFORMER_REFERENCE[name])
        ours = spec.build(**changes)
    else:  # timm's model of the same name, reduced through its own keyword arguments
        reference = timm().create_model(name, pretrained=False, **changes)
        ours = spec.build(**changes)
    reference = randomise(reference, std=0.05)
    state = spec.convert(reference.state_dict())
    ours.load_state_dict(state)
    return reference, ours.eval()


def test_every_size_is_compared_somewhere():
    assert SIZES and set(SIZES) <= set(NAT_REFERENCE) | set(CROSSFORMER_REFERENCE) | {
        n for n in NAMES if n.startswith(("deit", "maxvit", "swin"))}
    assert len(NAMES) == 26 and {n.split("_")[0] for n in SIZES} == {"deit", "nat", "dinat", "crossformer", "maxvit",
                                                                        "swin"}


@pytest.mark.parametrize("name", SIZES)
def test_every_size_equals_its_reference(name):
    reference, ours = reduced(name)
    size = checkpoints.CHECKPOINTS[name].size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), **TOLERANCE)


def test_the_dilation_schedules_are_the_official_ones():
    for name, expected in (("dinat_large", DINAT_224), ("dinat_large_384", DINAT_384),
                           ("dinat_large_384_11x11", DINAT_224)):
        with torch.device("meta"):
            model = checkpoints.build(name)
        assert [[b.attn.pattern(1000, 1000).dilation[0] for b in level.blocks] for level in model.levels] == expected
    kernels = {b.attn.pattern(1000, 1000).kernel_size[0] for level in checkpoints.build("dinat_large_384_11x11").levels
               for b in level.blocks}
    assert kernels == {11}


def readme_table() -> str:
    """README's table of the published models, from the registry and these tests."""
    source = {"deit": "timm", "maxvit": "timm", "swin": "timm"}
    rows = ["| name | paper's name | input | params | GFLOPs | published top-1 | licence | source of code and weights "
            "| compared with (test) |", "|---|---|---:|---:|---:|---:|---|---|---|"]
    for name, c in checkpoints.CHECKPOINTS.items():
        family = name.split("_")[0]
        test = f"{source.get(family, 'transcription')}, " + ("full model" if name in REFERENCES else "reduced depth")
        test += " and width" if family == "dinat" and c.size == 384 else ""
        top1 = f"{c.top1}" + (" (IN-22k pre-trained)" if name.startswith("dinat_large") else "")
        rows.append(f"| `{name}` | {c.label} | {c.size}² | {c.params:g} M | {c.gflops:g} | {top1} | {c.licence} | "
                    f"{c.source.split(' (README')[0]} | {test} |")
    return "\n".join(rows) + "\n"


def test_the_readme_table_is_the_registry():
    from pathlib import Path

    assert readme_table() in (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
