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


# Per dataset: (number of classes, {label: reference name}, number of templates, first template). The reference is
# ZSCL's / MoE-Adapters' mtil/src/datasets/collections.py: torchvision's `classes` through underline_to_space
# ('_' -> ' ') for Aircraft, CIFAR100 (cifar10.py), DTD, Food101, MNIST, OxfordPet, StanfordCars and SUN397; its
# own lists for Caltech101, EuroSAT and Flowers.
REFERENCE = {
    "Aircraft": (100, {0: "707-320", 72: "F-16A/B", 99: "Yak-42"}, 2, "a photo of a {}, a type of aircraft."),
    "Caltech101": (101, {0: "off-center face", 1: "centered face", 29: "head of a  crocodile",
                         83: "snoopy (cartoon beagle)"}, 34, "a photo of a {}."),
    "CIFAR100": (100, {0: "apple", 1: "aquarium fish", 99: "worm"}, 18, "a photo of a {}."),
    "DTD": (47, {0: "banded", 30: "polka-dotted", 46: "zigzagged"}, 8, "a photo of a {} texture."),
    "EuroSAT": (10, {0: "annual crop land", 2: "brushland or shrubland", 9: "lake or sea"}, 3,
                "a centered satellite photo of {}."),
    "Flowers102": (102, {0: "pink primrose", 15: "globe-flower", 59: "pink-yellow dahlia", 92: "ball moss",
                         101: "blackberry lily"}, 1, "a photo of a {}, a type of flower."),
    "Food101": (101, {0: "apple pie", 16: "cheese plate", 17: "cheesecake", 100: "waffles"}, 1,
                "a photo of a {}, a type of food."),
    "MNIST": (10, {0: "0 - zero", 7: "7 - seven", 9: "9 - nine"}, 1, 'a photo of the number: "{}".'),
    "OxfordPet": (37, {0: "Abyssinian", 1: "American Bulldog", 2: "American Pit Bull Terrier", 36: "Yorkshire Terrier"},
                  1, "a photo of a {}, a type of pet."),
    "StanfordCars": (196, {0: "AM General Hummer SUV 2000", 173: "Ram C/V Cargo Van Minivan 2012",
                           195: "smart fortwo Convertible 2012"}, 9, "a photo of a {}, a type of car."),
    "SUN397": (397, {0: "abbey", 8: "apartment building/outdoor", 9: "apse/indoor", 27: "bakery/shop",
                     396: "youth hostel"}, 2, "a photo of a {}."),
}
# CLIP's prompts.md names where they differ from the reference (label: name), and how many differ.
CLIP = {"MNIST": (10, {0: "0", 9: "9"}),
        "Flowers102": (3, {15: "globe flower", 59: "pink and yellow dahlia", 92: "air plant"}),
        "SUN397": (126, {8: "apartment building outdoor", 27: "bakery shop"}),
        "OxfordPet": (25, {0: "Abyssinian", 1: "american bulldog"})}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_class_names_and_templates_by_default(name):
    count, some, n_templates, first = REFERENCE[name]
    info = registry.get(name)
    assert info.num_classes == count and registry.get(name, "reference").classnames == info.classnames
    assert {i: info.classnames[i] for i in some} == some
    assert len(info.templates) == n_templates and info.templates[0] == first
    assert "collections.py" in registry.provenance(name)["classnames"]
    clip = registry.get(name, "clip")
    n_diff, clip_some = CLIP.get(name, (0, {}))
    assert sum(a != b for a, b in zip(info.classnames, clip.classnames)) == n_diff
    assert {i: clip.classnames[i] for i in clip_some} == clip_some
    assert clip.templates == info.templates
    assert ("classnames_clip" in registry.provenance(name)) == bool(n_diff)


def test_name_set_is_checked_and_user_datasets_have_one_list(cleanup):
    with pytest.raises(MtilError, match="'prompts' is not one of reference, clip"):
        registry.get("MNIST", "prompts")
    registry.register(DatasetInfo("MyDigits", ["a", "b"]))
    cleanup.append("MyDigits")
    assert registry.get("MyDigits", "clip").classnames == registry.get("MyDigits").classnames == ["a", "b"]


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
