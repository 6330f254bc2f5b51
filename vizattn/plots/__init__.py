"""Pure figure builders: patterns, costs, attention maps and receptive fields as plotly figures.

Every builder takes plain values and returns a ``plotly.graph_objects.Figure``; nothing here
holds state or touches widgets (``vizattn.widgets`` does that). The map figures an explorer
redraws on every move also come as plain data (``partition_spec``, ``rolled_spec`` and their
overlays), which spares building and checking plotly objects each time. One module per subject:

- ``style``: colours, line styles, the query marker, the animation player.
- ``partition``: where a query looks under a pattern (``partition_figure``, ``animate_queries``).
- ``swin``: Swin's rolled map of a shifted ``Block`` (``rolled_figure``).
- ``costs``: cost per layer against map side (``cost_figure``; the model is ``vizattn.mechanisms``).
- ``attention``: captured attention over a photo, every head of a layer (``query_map_figure``, ...).
- ``receptive``: theoretical and effective receptive fields.
- ``lavit``: LaViT's reuse chain, per-layer measures, saturation.
- ``charts``: plain charts of computed numbers (curves, heatmaps side by side, a photo with marks).

Coordinates: x is the column ``w``, y the row ``h`` (row 0 on top); a cell is one token.
Colours are colour-blind safe: Okabe-Ito for categories, Cividis for quantities.

>>> from vizattn.patterns import Neighborhood
>>> [t.name for t in partition_figure(Neighborhood(3), 6, 6, query=(0, 0)).data]
['groups', 'keys', 'slots', 'query']
"""

from ..mechanisms import cost
from .attention import (
                        ATTENTION_TRACES,
                        HEADS_TRACES,
                        SCALES,
                        animate_query_maps,
                        grey,
                        head_of_cell,
                        head_shapes,
                        heads_figure,
                        heads_traces,
                        photo_trace,
                        query_map_figure,
                        query_map_title,
                        query_map_traces,
                        query_maps_figure,
)
from .charts import curves_figure, maps_figure, photo_figure
from .costs import COST_MECHANISMS, cost_curves, cost_figure, cost_title, side_marks
from .lavit import (
                        chain_axes,
                        layer_measures_figure,
                        reuse_chain_figure,
                        reuse_chain_maps,
                        saturation_figure,
                        stage_shade,
)
from .partition import (
                        GROUP_SCALE,
                        TRACES,
                        animate_queries,
                        cell_boxes,
                        cells,
                        group_colours,
                        group_z,
                        overlay_spec,
                        partition_figure,
                        partition_spec,
                        query_overlay,
                        query_slots,
)
from .receptive import effective_figure, effective_parts, field_z, receptive_depths_figure, receptive_figure
from .style import KEY_COLOUR, OKABE_ITO, OUTSIDE_COLOUR
from .swin import roll, rolled_figure, rolled_groups, rolled_overlay, rolled_overlay_spec, rolled_size, rolled_spec

__all__ = ["OKABE_ITO", "KEY_COLOUR", "OUTSIDE_COLOUR", "TRACES", "COST_MECHANISMS", "query_slots", "cells",
           "partition_figure", "partition_spec", "query_overlay", "overlay_spec", "animate_queries", "cost",
           "cost_curves", "cost_title", "side_marks", "cost_figure", "SCALES", "rolled_figure", "rolled_spec",
           "rolled_groups", "rolled_overlay", "rolled_overlay_spec", "rolled_size", "roll", "GROUP_SCALE",
           "group_colours", "group_z", "cell_boxes", "ATTENTION_TRACES", "HEADS_TRACES", "grey", "photo_trace",
           "query_map_traces", "query_map_title", "query_map_figure", "query_maps_figure", "animate_query_maps",
           "heads_traces", "head_of_cell", "head_shapes", "heads_figure", "field_z", "receptive_figure",
           "effective_parts", "effective_figure", "receptive_depths_figure", "reuse_chain_maps", "chain_axes",
           "reuse_chain_figure", "stage_shade", "layer_measures_figure", "saturation_figure", "curves_figure",
           "maps_figure", "photo_figure"]
