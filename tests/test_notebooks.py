"""Every notebook executes without error (nbclient, the venv's python3 kernel) on run directories made here.

MTIL_RUN_DIR points at the session's fresh `mtil demo` run; MTIL_COMPARE_DIR at a small `mtil compare` grid on the
demo stream. The kernel inherits this process's environment.
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


def test_committed_notebooks_show_their_figures_and_stay_small():
    """Executed by `scripts/make_notebooks.py --execute` against the README's demo run and grid."""
    import nbformat
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
        assert len(images) >= 2 and not errors, path.name
        assert path.stat().st_size < 1_000_000, path.name


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory, session_cache, demo_run):
    """A small `mtil compare` grid on the demo stream, a baseline and two policies (reusing the session's cached demo
    assets)."""
    base = tmp_path_factory.mktemp("notebook-compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MTIL_CACHE", str(session_cache))
        assert main(["compare", "--methods", "finetune,moe", "--policies", "none,merge", "--seeds", "0",
                     "--out", str(base),
                     "--set=data.order=[Loupe,Pigments,Textiles]", "--set=train.iterations=20",
                     "--set=output.plots=false"]) == 0
    return base


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(notebook, demo_run, compare_dir, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MTIL_RUN_DIR", str(demo_run))
    monkeypatch.setenv("MTIL_COMPARE_DIR", str(compare_dir))
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()   # raises CellExecutionError on error
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{notebook.name} showed {len(images)} figures"
