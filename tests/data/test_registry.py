"""The dataset registry: the 11 MTIL datasets + TinyImageNet, look-ups, aliases, user registration."""
from pathlib import Path

import pytest
import yaml

import mtil
from mtil import config
from mtil.data import registry
from mtil.data.registry import DatasetInfo
from mtil.data.sources import LabelMatcher, norm
from mtil.errors import MtilError

COUNTS = {"Aircraft": 100, "Caltech101": 101, "CIFAR100": 100, "DTD": 47, "EuroSAT": 10, "Flowers102": 102,
          "Food101": 101, "MNIST": 10, "OxfordPet": 37, "StanfordCars": 196, "SUN397": 397, "TinyImageNet": 200}


@pytest.fixture
def cleanup():
    added = []
    yield added
    for name in added:
        registry.unregister(name)


@pytest.mark.parametrize("name,count", sorted(COUNTS.items()))
def test_builtin_counts_and_lists(name, count):
    info = registry.get(name)
    assert info.name == name
    assert info.num_classes == len(info.classnames) == count
    assert len(set(info.classnames)) == count
    assert all(isinstance(c, str) and c.strip() for c in info.classnames)
    assert info.templates and all("{}" in t for t in info.templates)
    prov = registry.provenance(name)
    assert prov.get("classnames") and prov.get("templates")
    # every class name (and every source-specific spelling) matches its own label, and only its own
    matcher = LabelMatcher(name)
    assert [matcher.match(c) for c in info.classnames] == list(range(count))
    sources = registry.source_names(name)
    if sources is not None:
        assert len(sources) == count
        assert [matcher.match(s) for s in sources] == list(range(count))
    assert len({norm(c) for c in info.classnames}) == count


def test_names_order_and_task_orders():
    names = registry.names()
    orders = yaml.safe_load((Path(mtil.__file__).parent / "references.yaml").read_text())
    assert names[:12] == orders["order1"]["tasks"] + ["TinyImageNet"]   # built-ins list in Order I (alphabetical)
    assert names[:11] == config.load(None).data.order                  # base.yaml's default order is Order I
    assert sorted(orders["order2"]["tasks"]) == sorted(orders["order1"]["tasks"])
    assert set(COUNTS) <= set(names)


@pytest.mark.parametrize("alias,canon", [("dtd", "DTD"), ("Cars", "StanfordCars"), ("pets", "OxfordPet"),
                                         ("Food", "Food101"), ("FLOWERS", "Flowers102"), ("sun", "SUN397"),
                                         ("oxford_iiit_pet", "OxfordPet"), ("fgvc-aircraft", "Aircraft"),
                                         ("cifar-100", "CIFAR100"), ("tiny-imagenet-200", "TinyImageNet")])
def test_case_insensitive_lookup_and_aliases(alias, canon):
    assert registry.resolve(alias) == canon
    assert registry.get(alias).name == canon


def test_clip_class_names_and_mtil_training_templates():
    assert registry.get("MNIST").classnames == [str(i) for i in range(10)]
    assert registry.get("Caltech101").classnames[:3] == ["off-center face", "centered face", "leopard"]
    assert registry.get("EuroSAT").classnames[0] == "annual crop land"
    assert "apartment building outdoor" in registry.get("SUN397").classnames
    assert registry.get("StanfordCars").classnames[0] == "AM General Hummer SUV 2000"
    assert registry.get("OxfordPet").classnames[:2] == ["Abyssinian", "american bulldog"]
    assert registry.get("CIFAR100").classnames[1] == "aquarium fish"
    assert registry.get("Food101").classnames[16:18] == ["cheese plate", "cheesecake"]
    assert registry.get("StanfordCars").templates[0] == "a photo of a {}, a type of car."
    assert registry.get("Food101").templates == ["a photo of a {}, a type of food."]
    assert registry.get("Aircraft").templates[0] == "a photo of a {}, a type of aircraft."
    assert registry.get("MNIST").templates == ['a photo of the number: "{}".']
    assert len(registry.get("Caltech101").templates) == 34 and len(registry.get("CIFAR100").templates) == 18
    assert registry.get("DTD").prompts()[0] == "a photo of a banded texture."


def test_get_returns_a_copy():
    info = registry.get("DTD")
    info.classnames.append("nonsense")
    info.templates.clear()
    assert registry.get("DTD").num_classes == 47 and registry.get("DTD").templates


def test_unknown_name_lists_registered():
    with pytest.raises(MtilError, match="unknown dataset 'NoSuchSet'.*Aircraft.*TinyImageNet"):
        registry.get("NoSuchSet")
    assert registry.resolve("NoSuchSet") is None


def test_register_custom_dataset(cleanup):
    cleanup.append("MyShapes")
    registry.register(DatasetInfo("MyShapes", ["circle", "square"], ["a drawing of a {}."]), aliases=["shapes"])
    assert registry.get("shapes").classnames == ["circle", "square"]
    assert registry.names()[-1] == "MyShapes"
    # re-registering a user entry replaces it
    registry.register(DatasetInfo("MyShapes", ["circle", "square", "star"]))
    assert registry.get("myshapes").num_classes == 3
    assert registry.get("MyShapes").templates == ["a photo of a {}."]


def test_register_rejects_bad_input(cleanup):
    with pytest.raises(MtilError, match="built-in"):
        registry.register(DatasetInfo("DTD", ["a", "b"]))
    registry.register(DatasetInfo("DTD", registry.get("DTD").classnames, registry.get("DTD").templates))  # no-op
    with pytest.raises(MtilError, match="collides"):
        registry.register(DatasetInfo("cars", ["a"]))
    with pytest.raises(MtilError, match="duplicate"):
        registry.register(DatasetInfo("Dup", ["a", "a"]))
    with pytest.raises(MtilError, match="'\\{\\}'"):
        registry.register(DatasetInfo("NoSlot", ["a"], ["a photo"]))
    with pytest.raises(MtilError, match="must start with"):
        registry.register(DatasetInfo("../evil", ["a"]))
    with pytest.raises(MtilError, match="built-in"):
        registry.unregister("DTD")
