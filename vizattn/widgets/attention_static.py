"""The attention explorer's kernel-free form (``vizattn.widgets.static``): which of its controls are
precomputed for the static site, over which values, and what the page says about the rest."""

from __future__ import annotations

import functools

from . import static

__all__ = ["AttentionStatic"]


class AttentionStatic:
    """Mixed into ``AttentionExplorer``: its ``static_*`` hooks (layers, heads, a grid of queries)."""

    # the budget: attention weights stored (float32: about 2 MB in the page; a published model's 56x56
    # maps: about 0.6 MB) and states (each one a redraw while the site is built)
    STATIC_FLOATS, STATIC_FLOATS_PUBLISHED, STATIC_STATES = 400_000, 120_000, 600

    def _static_layers(self) -> list[str]:
        """Every layer for vizattn's small models; the chosen one for a published model (56x56 maps)."""
        return [self.state.layer] if self.checkpoint is not None else list(self.records)

    def static_controls(self) -> list[dict]:
        """Layers (``_static_layers``), every head (a layer with fewer shows its last), and a grid of query
        positions, as many as the budgets allow (2 to 5 per axis, and the start), placed on the start layer's
        map and carried to every other layer's map at the same place in the photo."""
        s, layers = self.state, self._static_layers()
        heads = max(len(self.records[n].heads) for n in layers)
        floats = sum(2 * heads * self.records[n].size[0] * self.records[n].size[1] for n in layers)
        budget = self.STATIC_FLOATS if self.checkpoint is None else self.STATIC_FLOATS_PUBLISHED
        n = max(2, min(5, int((budget / floats) ** 0.5), int((self.STATIC_STATES / heads / len(layers)) ** 0.5)))
        H0, W0 = self.record.size
        controls = [static.control(self, "layer", [(n, {"layer": n}) for n in layers])] if len(layers) > 1 else []
        controls.append(static.control(self, "head", static.options(range(heads), s.head, "head")))
        for name, side, label in (("query_i", H0, "query row"), ("query_j", W0, "query col")):
            if len(layers) > 1 and any(self.records[n].size != (H0, W0) for n in layers):
                label += f" (on the {H0}x{W0} map)"
            opts = [(str(v), functools.partial(_spot, name, v, side)) for v in
                    sorted(set(static.spread(0, side - 1, n)) | {getattr(s, name)})]
            control = static.control(self, label, opts)
            control["start"] = [int(o[0]) for o in opts].index(getattr(s, name))
            controls.append(control)
        return controls

    def static_panels(self) -> list:
        return [self.figure, self.heads_figure]

    def static_texts(self) -> list:
        return [self.message] if self.checkpoint is None else [self.banner, self.message]  # top-5 or RANDOM WEIGHTS

    def static_note(self) -> str:
        what = "the layers, heads" if self.checkpoint is None else "the heads"
        return (f"Kernel-free copy of the attention explorer: {what} and a grid of queries, every state "
                f"precomputed by the explorer itself (a head past a layer's last shows its last; a query position "
                f"on the start layer's map goes to the same place in the photo on other layers). Not precomputed: "
                f"the model, task and photo menus, the colour scale, other layers and queries, clicks on the "
                f"photo or on a head. " + static.LIVE)


def _spot(name: str, value: int, side: int, explorer) -> dict:
    """The query row or column ``value`` of a ``side``-cell map, on the current layer's map (same place)."""
    H, W = explorer.record.size
    n = H if name == "query_i" else W
    return {name: min(n - 1, int((value + 0.5) * n / side))}
