"""Shared test setup: offline hub, a private cache directory, one thread, a tiny synthetic task stream."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest, and 2 cores are shared
# JAX (the RL tests): XLA's CPU thread pool takes every core in each xdist worker; one thread each, as for torch
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


class Interrupt(BaseException):
    """A kill: raised where a test stops a run, not an Exception, so no handler of mtil's catches it."""


def interrupt_at_row(monkeypatch, n):
    """Patch the evaluator so that its n-th accuracy row (1-based) raises Interrupt: a kill between tasks."""
    from mtil.engine import evaluate
    original_row, calls = evaluate.Evaluator.row, {"n": 0}

    def row(self, learned):
        calls["n"] += 1
        if calls["n"] == n:
            raise Interrupt
        return original_row(self, learned)
    monkeypatch.setattr(evaluate.Evaluator, "row", row)


def worker_cores() -> int:
    """The cores this test process may use: all of them, shared out among pytest-xdist's workers."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


@pytest.fixture(scope="session", name="worker_cores")
def worker_cores_fixture() -> int:
    return worker_cores()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """The session's MTIL_CACHE folder (demo data and pre-trained tiny CLIP are built into it once)."""
    return tmp_path_factory.getbasetemp() / "mtil-cache"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, session_cache, monkeypatch):
    """Every test gets MTIL_CACHE in a temp dir unless a test sets its own."""
    if "MTIL_CACHE" not in os.environ or os.environ["MTIL_CACHE"].startswith(str(tmp_path_factory.getbasetemp())):
        monkeypatch.setenv("MTIL_CACHE", str(session_cache))


def make_stream(root, tasks=("Red", "Green", "Blue"), classes=3, train=24, test=12, seed=0):
    """Tiny prepared-format stream: per task, classes are stripe orientations/positions on a task colour."""
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    colours = {"Red": (220, 40, 40), "Green": (40, 200, 60), "Blue": (50, 70, 230), "Gray": (128, 128, 128)}

    def image(task, label):
        img = rng.integers(0, 60, size=(32, 32, 3)).astype(np.uint8)
        band = slice(4 + 8 * label, 10 + 8 * label)
        if label % 2:
            img[:, band] = colours.get(task, (200, 200, 0))
        else:
            img[band, :] = colours.get(task, (200, 200, 0))
        return img

    for task in tasks:
        names = [f"{task.lower()} pattern {c}" for c in range(classes)]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        splits = {}
        for split, n in (("train", train), ("test", test)):
            labels = [i % classes for i in range(n)]
            splits[split] = datasets.Dataset.from_dict(
                {"image": [image(task, y) for y in labels], "label": labels}, features=features)
        datasets.DatasetDict(splits).save_to_disk(str(root / task))
        (root / task / "templates.json").write_text('["a photo of a {}.", "an image of a {}."]')
    return list(tasks)


TINY_OVERRIDES = [
    "model.name=mtil-tiny", "model.pretrained=null", "moe.num_experts=6", "moe.hidden=8", "moe.top_k=2",
    "train.iterations=6", "train.batch_size=8", "train.warmup_steps=2", "train.lr=1e-2",
    "train.router_snapshot_every=2", "eval.batch_size=16", "selector.components=4", "selector.max_fit_samples=24",
    "output.plots=false", "policy.merge.every=2", "policy.merge.warmup=2",
]


@pytest.fixture(scope="session")
def stream_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    make_stream(root)
    return root


@pytest.fixture()
def tiny_args(stream_root):
    """CLI overrides for a 3-task tiny run on the synthetic stream."""
    out = [f"--set={o}" for o in TINY_OVERRIDES]
    return out + [f"--set=data.root={stream_root}", "--set=data.order=[Red,Green,Blue]"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, session_cache):
    """One `mtil demo` run per session (slow: builds the demo data and pre-trains the tiny CLIP into the session's
    shared MTIL_CACHE). Returns the run directory. The slow tests share it, so pre-training happens once."""
    from mtil.cli import main
    out = tmp_path_factory.mktemp("demo") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(worker_cores())  # the real demo recipe: every core this worker has, as `mtil demo` would
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MTIL_CACHE", str(session_cache))
            assert main(["demo", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out
