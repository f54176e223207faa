"""mtil.data.fake: prepared fake copies carrying a registered dataset's real class list."""
import numpy as np

from mtil.data import prepared, registry
from mtil.data.fake import fake_prepared


def test_fake_prepared_carries_the_registry_classes(tmp_path):
    result = fake_prepared(tmp_path, "flowers", per_class=2, test_per_class=1, size=6)
    assert result.rows == {"train": 204, "test": 102}
    train = prepared.load_split(tmp_path, "Flowers102", "train")
    assert list(train.features["label"].names) == registry.get("Flowers102").classnames
    assert np.bincount(train["label"]).tolist() == [2] * 102
    assert train[0]["image"].size == (6, 6)
    info = prepared.load_info(tmp_path, "Flowers102")
    prepared.check_consistent(tmp_path, "Flowers102", info.classnames,
                              {s: prepared.load_split(tmp_path, "Flowers102", s) for s in prepared.SPLITS})


def test_fake_prepared_is_seeded(tmp_path):
    fake_prepared(tmp_path / "a", "MNIST", seed=3)
    fake_prepared(tmp_path / "b", "MNIST", seed=3)
    a, b = (np.asarray(prepared.load_split(tmp_path / x, "MNIST", "test")[0]["image"]) for x in "ab")
    assert (a == b).all()
