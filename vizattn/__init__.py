"""vizattn: structured vision attention you can see and play with.

>>> import torch, vizattn
>>> q = torch.randn(1, 2, 8, 8, 16)
>>> vizattn.attend(q, q, q, vizattn.patterns.Block(4)).shape
torch.Size([1, 2, 8, 8, 16])
"""

from . import patterns
from .functional import attend
from .probe import probe  # the function; the module stays importable as ``vizattn.probe`` via sys.modules

__all__ = ["attend", "patterns", "probe"]
__version__ = "0.1.0"
