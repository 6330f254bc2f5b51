"""timm for the exactness tests, imported without torchvision.

timm's model code (``timm.models.vision_transformer``, ``swin_transformer``, ``maxxvit``) does
not use torchvision, but ``import timm`` imports it: ``timm.layers`` takes ``FrozenBatchNorm2d``
from ``torchvision.ops.misc`` and ``timm.data`` imports datasets and transforms. With this
project's CPU build of torch, the registry's torchvision wheel cannot load its compiled operators
(``RuntimeError: operator torchvision::nms does not exist``), and swapping the torch build is not
an option. So, when ``import torchvision`` fails (missing or broken), ``timm()`` first installs a
*placeholder* torchvision for this test process only: a finder that answers every
``torchvision.*`` import with an empty module whose attributes are inert classes (using one
raises ``RuntimeError``). Every name timm imports then exists, nothing of torchvision is ever
run, and the reference models are timm's own code, unchanged. A working torchvision is used as
it is. dev.py installs timm with ``pip install --no-deps`` so that pip does not pull a torchvision
wheel (or another torch) in.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


class _Placeholder(type):
    """Metaclass of the inert classes: any attribute is another inert class (``InterpolationMode.BILINEAR``)."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _inert(f"{cls.__qualname__}.{name}")


def _unusable(self, *args, **kwargs):
    raise RuntimeError(f"{type(self).__qualname__} comes from the placeholder torchvision of the tests "
                       "(tests/reference/timm_models.py); install a working torchvision to use it")


def _inert(name: str) -> type:
    return _Placeholder(name, (), {"__init__": _unusable, "__module__": "torchvision"})


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _inert(name)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``torchvision`` and every ``torchvision.*`` import with a ``_Module`` package."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Module(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def placeholder_installed() -> bool:
    return any(isinstance(f, _Finder) for f in sys.meta_path)


def timm():
    """The ``timm`` module (ModuleNotFoundError if timm is not installed)."""
    if "timm" not in sys.modules and not placeholder_installed():
        try:
            import torchvision  # noqa: F401
        except Exception:  # missing, or a wheel whose compiled operators do not load
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]
            sys.meta_path.insert(0, _Finder())
    import timm as module

    return module
