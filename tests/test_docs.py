"""The documentation's pictures: every image the README and docs/ link exists, and scripts/make_figures.py draws
every figure the README links under docs/figures/ from a run and a grid (here the tiny stream's); the RL
switch study's tables in docs/rl.md are those of its stored compare."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtil.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def linked_images(page: Path) -> list[Path]:
    return [(page.parent / link).resolve() for link in IMAGE.findall(page.read_text())]


def test_every_linked_image_exists_and_the_readme_shows_figures():
    for page in PAGES:
        for image in linked_images(page):
            assert image.is_file(), f"{page.name} links {image}, which does not exist"
            assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
    readme = {p.name for p in linked_images(ROOT / "README.md")}
    assert {"fixed_experts.png", "router_weights.png", "accuracy_matrix.png", "compare.png"} <= readme


def test_make_figures_writes_every_figure_the_readme_links(tmp_path, stream_root):
    from conftest import TINY_OVERRIDES
    cfg = tmp_path / "cmp.yaml"
    cfg.write_text(f"data: {{root: '{stream_root}', order: [Red, Green]}}\n")
    grid = tmp_path / "grid"
    assert main(["compare", str(cfg), "--policies", "freeze,merge", "--seeds", "42", "--out", str(grid),
                 *[f"--set={o}" for o in TINY_OVERRIDES]]) == 0
    out = tmp_path / "figures"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--compare", str(grid),
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    wanted = {p.name for p in linked_images(ROOT / "README.md") if p.parent == ROOT / "docs" / "figures"}
    written = {p.name for p in out.iterdir()}
    assert wanted and wanted <= written
    for name in wanted:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--compare",
                          str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cell", ["switch_pilot", "switch", "switch_long_pilot", "switch_long"])
def test_the_switch_study_tables_in_docs_rl_are_those_of_its_stored_compares(cell):
    """docs/rl.md's switch-study tables are scripts/rl_switch_tables.py's output over docs/rl/<cell>_compare.json
    (the compare of the cell's runs): every row the script prints stands in the page, so neither can drift."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "rl_switch_tables.py"),
                           str(ROOT / "docs" / "rl" / f"{cell}_compare.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    page = (ROOT / "docs" / "rl.md").read_text()
    assert len(rows) == 15 and [row for row in rows if row not in page] == []
