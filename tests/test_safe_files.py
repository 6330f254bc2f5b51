"""Reading checkpoint files never runs code nobody asked for (vizattn.checkpoints.files).

A file whose pickle would run code is refused by default, wherever it comes from (a path, the cache,
a download), and the payload provably did not run; it loads only with ``trust_pickle=True``. The
official training scripts' files, made here in their formats with the same pickled classes
(``argparse.Namespace``; yacs' ``CfgNode``, through a stand-in registered as ``yacs.config`` since
yacs is no dependency), load safely.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import types

import pytest
import torch
from test_checkpoints import NAME, deit_state, same_model, serving, with_url

from vizattn import checkpoints


class RunsCode:
    """Unpickling it runs Python code (``exec``), which writes the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('the payload ran')",)


def direct():
    return checkpoints.load(NAME, weights=deit_state())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_code_running_file_is_refused_by_default_and_runs_only_with_trust_pickle(tmp_path, zip_format):
    marker, path = tmp_path / "ran.txt", tmp_path / "ckpt.pth"
    torch.save({"model": deit_state(), "extra": RunsCode(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ValueError) as err:
        checkpoints.load(NAME, weights=path)
    text = str(err.value)  # torch's message for the legacy format, our source there, says "exec" for builtins.exec
    assert text.startswith(f"{path}: refused to unpickle {'builtins.exec' if zip_format else 'exec'} ")
    assert "trust_pickle=True" in text and "runs any code" in text
    assert not marker.exists()  # nothing ran
    model = checkpoints.load(NAME, weights=path, trust_pickle=True)
    assert marker.read_text() == "the payload ran"  # the opt-in does unpickle in full
    assert same_model(model, direct())


def test_a_cached_or_downloaded_file_is_read_as_safely(tmp_path, monkeypatch):
    served, cache, marker = tmp_path / "served", tmp_path / "cache", tmp_path / "ran.txt"
    served.mkdir()
    spec = checkpoints.CHECKPOINTS[NAME]
    torch.save({"model": deit_state(), "extra": RunsCode(marker)}, served / spec.file)
    monkeypatch.setenv("VIZATTN_CHECKPOINTS", str(cache))
    with serving(served) as base:
        with_url(monkeypatch, NAME, f"{base}/{spec.file}")
        with pytest.raises(ValueError, match=r"refused to unpickle builtins\.exec.*trust_pickle=True"):
            checkpoints.load(NAME)  # downloaded into the cache, then refused
    assert (cache / spec.file).is_file() and not marker.exists()
    with pytest.raises(ValueError, match=rf"{cache / spec.file}: refused to unpickle builtins\.exec"):
        checkpoints.load(NAME)  # found in the cache: refused again
    assert not marker.exists()
    assert same_model(checkpoints.load(NAME, trust_pickle=True), direct()) and marker.exists()


@pytest.fixture
def yacs_cfgnode(monkeypatch):
    """A stand-in for ``yacs.config.CfgNode`` (yacs 0.1.8), importable under that name while the test runs:
    a dict whose ``__init__`` sets yacs' four bookkeeping attributes, so it pickles as yacs' class does
    (NEWOBJ of ``yacs.config.CfgNode``, its items, then its ``__dict__``)."""

    class CfgNode(dict):
        def __init__(self, init_dict=None, new_allowed=False):
            super().__init__(init_dict or {})
            self.__dict__.update({"__immutable__": False, "__deprecated_keys__": set(), "__renamed_keys__": {},
                                  "__new_allowed__": new_allowed})

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    package, module = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    module.CfgNode, package.config = CfgNode, module
    monkeypatch.setitem(sys.modules, "yacs", package)
    monkeypatch.setitem(sys.modules, "yacs.config", module)
    return CfgNode


def official_files(cfgnode):
    """Each official training script's checkpoint for the DeiT weights, as it saves it: ``{name: object}``."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler = {"t_initial": 300, "lr_min": 1e-5, "warmup_t": 5, "base_values": [1e-3], "metric": None,
                 "t_in_epochs": True, "noise_range_t": None, "noise_seed": 42}  # a timm scheduler's __dict__
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 0}  # torch.cuda.amp.GradScaler.state_dict()
    args = argparse.Namespace(model=NAME, lr=5e-4, input_size=224, opt_betas=[0.9, 0.999], resume="", dist_url=None)
    config = cfgnode({"MODEL": cfgnode({"NAME": "swin_tiny_patch4_window7_224", "DROP_PATH_RATE": 0.2}),
                      "TRAIN": cfgnode({"BASE_LR": 1e-3, "EPOCHS": 300}), "AMP_OPT_LEVEL": "O1"})
    config.__dict__["__immutable__"] = True  # config.freeze()
    state = deit_state()
    return {
        # facebookresearch/deit main.py
        "deit": {"model": state, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler, "epoch": 299,
                 "model_ema": state, "scaler": scaler, "args": args},
        # timm's CheckpointSaver, as NAT/DiNAT's classification/train.py uses it
        "timm_nat": {"epoch": 299, "arch": NAME, "state_dict": state, "optimizer": optimizer.state_dict(),
                     "version": 2, "args": args, "amp_scaler": scaler, "metric": 72.2},
        # microsoft/Swin-Transformer utils.save_checkpoint
        "swin": {"model": state, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler,
                 "max_accuracy": 81.2, "scaler": scaler, "epoch": 299, "config": config},
        # cheerss/CrossFormer utils.save_checkpoint (with apex amp)
        "crossformer": {"model": state, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler,
                        "max_accuracy": 81.5, "epoch": 299, "config": config,
                        "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 10}}},
    }


def test_the_official_training_scripts_files_load_safely(tmp_path, yacs_cfgnode):
    for name, content in official_files(yacs_cfgnode).items():
        path = tmp_path / f"{name}.pth"
        torch.save(content, path)
        with pytest.raises(pickle.UnpicklingError):  # torch's safe reader alone refuses them ...
            torch.load(path, weights_only=True)
        assert same_model(checkpoints.load(NAME, weights=path), direct()), name  # ... the allow-list reads them


def test_a_file_that_is_no_checkpoint_says_so(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"these are not weights")
    with pytest.raises(ValueError, match=rf"{path}: not a readable PyTorch checkpoint file"):
        checkpoints.load(NAME, weights=path)
