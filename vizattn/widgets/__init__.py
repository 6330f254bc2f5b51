"""Interactive explorers for JupyterLab: typed state (traitlets) + a view (ipywidgets + plotly).

Every explorer (a ``base.Explorer``) keeps its choices in a ``state`` of typed traits that can be
driven with no browser, shows them with controls and one ``figure.FigureWidget`` per panel (plotly's
``FigureWidget`` with a browser side that draws only what an edit changes), redrawn from the builders
of ``vizattn.plots``, and exports a static figure with ``to_figure()``. One module per explorer:

- ``partition``: ``PartitionExplorer``, which keys a query sees under each mechanism's pattern.
- ``cost``: ``CostExplorer``, cost per attention layer against the map side.
- ``receptive_field``: ``ReceptiveFieldExplorer``, theoretical and effective fields of stacked layers.
- ``attention``: ``AttentionExplorer``, a trained model's attention on a photograph.
- ``lavit``: ``LaViTExplorer``, LaViT's reused attention, its diagonality, and saturation against ViT.
- ``flow``: ``FlowExplorer``, where the whole network looks (``vizattn.flow``), layer by layer.

The mechanisms in the menus, their sliders and their costs come from ``vizattn.mechanisms``;
the random stacks behind effective fields from ``vizattn.receptive``.

Importing this package imports no plotly widget code. ``setup()`` prepares plotly once per process
(defers its import of nbformat, checks the private names the figure speaks against the plotly range
tested: ``figure.PLOTLY_RANGE``); the first explorer's figure calls it, and a notebook may call it
first to fail early.

>>> state = PartitionState(mechanism="DiNAT", size=12, kernel=3, dilation=2)
>>> pattern_for(state), resolve(state)[0] == pattern_for(state)
(Neighborhood(3, dilation=2), True)
"""

from ..receptive import STACKS, stack_for, stack_model
from .attention import MODELS, AttentionExplorer, AttentionState, published, weights_banner
from .cost import CostExplorer, CostState, cost_table
from .figure import setup
from .flow import FlowExplorer, FlowState
from .lavit import LaViTExplorer, LaViTState
from .partition import MECHANISMS, PartitionExplorer, PartitionState, bounds, pattern_for, resolve
from .receptive_field import ReceptiveFieldExplorer, ReceptiveState
from .static import active as _kernel_free
from .static import install as _install

if _kernel_free():  # VIZATTN_STATIC=1: a kernel that renders for a page without one (python3 dev.py site)
    _install()

__all__ = ["MECHANISMS", "PartitionState", "pattern_for", "resolve", "bounds", "PartitionExplorer", "CostState",
           "CostExplorer", "cost_table", "STACKS", "stack_for", "stack_model", "ReceptiveState",
           "ReceptiveFieldExplorer", "MODELS", "AttentionState", "AttentionExplorer", "published", "weights_banner",
           "LaViTState", "LaViTExplorer", "FlowState", "FlowExplorer", "setup"]
