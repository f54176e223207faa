"""The run checkpoint (`checkpoints/last.pt`): saved atomically, read with one clear error, and the RNG states it
carries. Every checkpoint holds the provenance record of the run that wrote it (`mtil.provenance`), which
`--resume` compares with the run it continues."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import MtilError
from ..rundir import files

FORMAT = 3   # 2: the run's provenance record (mtil.provenance) is part of every checkpoint; 3: the method's state
             # under "method" (was "tracker" and "policy")


def save(state: dict, path: str | os.PathLike) -> Path:
    return files.atomic_write(path, lambda f: torch.save({**state, "format": FORMAT}, f), "wb")


def load(path: str | os.PathLike, mmap: bool = False) -> dict:
    """The checkpoint at `path`; with `mmap`, its tensors are mapped from the file, not read (a record is cheap
    to get from a checkpoint of several full models)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as e:  # a truncated or foreign file: torch raises several types
        raise MtilError(f"cannot read {path} ({type(e).__name__}); it is not an mtil checkpoint") from None
    if isinstance(state, dict) and state.get("format") == 1:
        raise MtilError(f"{path} was written by an earlier mtil without a provenance record, so this run cannot be "
                        "checked against it; start a new --out (or finish it with the mtil version that wrote it)")
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("provenance"), dict):
        raise MtilError(f"{path} is not an mtil checkpoint of this version")
    return state


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
