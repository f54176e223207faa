"""Network checks of the downloading sources: is offline operation requested, is a host reachable, and the
one-line error that says how to prepare a dataset by hand."""
from __future__ import annotations

import os
import socket

from ...errors import MtilError


def offline_requested(hf: bool = False) -> bool:
    """True when the environment asks for offline operation: MTIL_OFFLINE for every source, HF_HUB_OFFLINE /
    HF_DATASETS_OFFLINE for the Hugging Face hub (`hf=True`)."""
    names = ("MTIL_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hf else ("MTIL_OFFLINE",)
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in names)


def network_available(host: str, port: int = 443, timeout: float = 3.0, hf: bool = False) -> bool:
    """Whether `host:port` accepts a TCP connection within `timeout` seconds (False when offline is requested)."""
    if offline_requested(hf):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def no_network(name: str, root: str | os.PathLike, what: str) -> MtilError:
    return MtilError(f"no network ({what}): download {name} yourself and run "
                     f"`mtil prepare {name} --root {root} --from DIR`")
