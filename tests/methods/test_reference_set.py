"""Reference sets for the distillation baselines: `mtil prepare NAME --from DIR --captions FILE`, reading one back,
and the one-line errors."""
import json

import numpy as np
import pytest
from PIL import Image

from mtil.cli import main
from mtil.data.reference import load_reference

from method_helpers import method_root  # noqa: F401 (fixture)


@pytest.fixture()
def images_and_captions(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "n01" / "deep").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, where in enumerate(["n01", "n01/deep", "n01/deep", "."]):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / where / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    captions = tmp_path / "captions.txt"
    captions.write_text("a dog on a sofa\n\n  a red car  \n")
    return folder, captions


def test_prepare_a_reference_set_from_any_folder_and_a_captions_file(images_and_captions, tmp_path, capsys):
    folder, captions = images_and_captions
    root = tmp_path / "data"
    assert main(["prepare", "Ref", "--root", str(root), "--from", str(folder), "--captions", str(captions)]) == 0
    assert "4 images, 2 sentences" in capsys.readouterr().out
    images, sentences = load_reference(root, "Ref")
    assert len(images) == 4 and sentences == ["a dog on a sofa", "a red car"]
    assert json.loads((root / "Ref" / "mtil.json").read_text())["skipped"] == 1
    assert main(["prepare", "Ref", "--root", str(root), "--from", str(folder), "--captions", str(captions)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["prepare", "Ref", "--root", str(root), "--from", str(folder), "--captions", str(captions),
                 "--max-per-class", "1", "--overwrite"]) == 0      # the first image of each folder (3 folders)
    assert len(load_reference(root, "Ref")[0]) == 3


@pytest.mark.parametrize("case,expected", [("no-from", "needs --from"), ("no-images", "no image files"),
                                           ("empty-captions", "holds no sentences"), ("bad-json", "not valid JSON")])
def test_reference_set_errors_are_one_line(case, expected, images_and_captions, tmp_path, capsys):
    folder, captions = images_and_captions
    args = ["prepare", "Ref", "--root", str(tmp_path / "data"), "--from", str(folder), "--captions", str(captions)]
    if case == "no-from":
        args = [a for a in args if a not in ("--from", str(folder))]
    elif case == "no-images":
        (tmp_path / "empty").mkdir()
        args[args.index(str(folder))] = str(tmp_path / "empty")
    elif case == "empty-captions":
        captions.write_text("\n \n")
    else:
        bad = tmp_path / "c.json"
        bad.write_text("[1, ")
        args[args.index(str(captions))] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtil: error: ") and expected in err[0], err
    assert not (tmp_path / "data" / "Ref").exists()


def test_zscl_without_its_reference_set_names_the_command(method_root, tmp_path, capsys):
    from conftest import TINY_OVERRIDES
    args = [f"--set={o}" for o in TINY_OVERRIDES] + [f"--set=data.root={method_root}", "--set=data.order=[Red]",
                                                     "--set=method.name=zscl", "--set=method.zscl.reference=ImageNetCC"]
    assert main(["run", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mtil prepare ImageNetCC" in err[0] and "--captions" in err[0]
    assert not (tmp_path / "o").exists()
