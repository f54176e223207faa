"""Shared test setup: offline hub, a private cache directory, few threads (2-core machines)."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets MTIL_CACHE in a temp dir unless a test sets its own."""
    if "MTIL_CACHE" not in os.environ or os.environ["MTIL_CACHE"].startswith(str(tmp_path_factory.getbasetemp())):
        monkeypatch.setenv("MTIL_CACHE", str(tmp_path_factory.getbasetemp() / "mtil-cache"))
