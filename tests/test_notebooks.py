"""Every notebook executes without error (nbclient, the venv's python3 kernel) on run directories made here.

MTIL_RUN_DIR points at a real tiny merge run; MTIL_COMPARE_DIR at a folder holding it, a second merge seed and a
grow run (the layout `mtil compare` writes). The kernel inherits this process's environment.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from mtil.cli import main

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_generated_from_the_script():
    assert {p.stem for p in NOTEBOOKS} == {"fixed_expert_heatmap", "compare_policies", "router_weights"}
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_notebooks.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory, stream_root):
    from conftest import TINY_OVERRIDES
    base = tmp_path_factory.mktemp("notebook-runs")
    args = [f"--set={o}" for o in TINY_OVERRIDES] + [f"--set=data.root={stream_root}", "--set=data.order=[Red,Green,Blue]"]
    for policy, seed in (("merge", 0), ("merge", 1), ("grow", 0)):
        assert main(["run", *args, f"--set=policy.name={policy}", f"--set=seed={seed}",
                     "--out", str(base / f"{policy}-seed{seed}")]) == 0
    return base


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(notebook, compare_dir, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MTIL_RUN_DIR", str(compare_dir / "merge-seed0"))
    monkeypatch.setenv("MTIL_COMPARE_DIR", str(compare_dir))
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()   # raises CellExecutionError on error
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{notebook.name} showed {len(images)} figures"
