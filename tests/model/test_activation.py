"""The activation follows the weights: OpenAI's CLIP weights get QuickGELU (the reference repos run OpenAI's own
clip/model.py), whatever open_clip builds for the bare model name. Tested offline: a random ViT-B-16 state dict is
served in place of the `openai` download, saved as OpenAI's TorchScript archive, and as a plain state dict."""
import open_clip
import pytest
import torch
from torch import nn

from mtil import provenance
from mtil.cli import main
from mtil.config import load as load_config
from mtil.errors import MtilError
from mtil.model import backbone


class _Archive(nn.Module):
    """A TorchScript archive holding a state dict under OpenAI's names (its release format)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _write_archive(state: dict, path) -> None:
    root = _Archive()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, value)
    root.register_buffer("input_resolution", torch.tensor(224))   # OpenAI's archives carry these three
    root.register_buffer("context_length", torch.tensor(77))
    root.register_buffer("vocab_size", torch.tensor(49408))
    torch.jit.script(root).save(str(path))


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    """A random ViT-B-16 (fp16 state dict, 300 MB), as a plain file and as an OpenAI-style TorchScript archive."""
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    state = {k: v.half() for k, v in open_clip.create_model("ViT-B-16", pretrained=None).state_dict().items()}
    plain, archive = folder / "vit-b-16.bin", folder / "ViT-B-16.pt"
    torch.save(state, plain)
    _write_archive(state, archive)
    return {"plain": plain, "archive": archive, "state": state}


def _features(model):
    torch.manual_seed(1)
    image = torch.randn(2, 3, 224, 224)
    text = open_clip.get_tokenizer("ViT-B-16")(["a photo of a cat.", "a photo of the number: \"0 - zero\"."])
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(text)


@pytest.mark.slow
def test_openai_tag_builds_quick_gelu_and_computes_what_the_quickgelu_model_does(vit_weights, monkeypatch):
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda *a, **k: str(vit_weights["plain"]))
    plain_open_clip = open_clip.create_model("ViT-B-16", pretrained="openai").eval()   # what open_clip 3.x builds
    ours = backbone.load("ViT-B-16", "openai")
    assert ours.activation == "quick_gelu" == backbone.built_activation(ours.model)
    reference = open_clip.create_model("ViT-B-16-quickgelu", pretrained=str(vit_weights["plain"])).eval()
    for got, want, gelu in zip(_features(ours.model), _features(reference), _features(plain_open_clip)):
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
        assert not torch.allclose(got, gelu, atol=1e-3)   # the activation changes every feature
    assert backbone.built_activation(plain_open_clip) in ("gelu", "quick_gelu")   # a later open_clip may fix it


@pytest.mark.slow
def test_openai_archive_gets_quick_gelu_and_a_plain_state_dict_must_say(vit_weights, monkeypatch):
    archive = backbone.load("ViT-B-16", str(vit_weights["archive"]))
    assert archive.activation == "quick_gelu"
    loaded = archive.model.state_dict()
    for key in ("visual.conv1.weight", "transformer.resblocks.3.mlp.c_fc.weight", "logit_scale"):
        assert torch.equal(loaded[key], vit_weights["state"][key].float())

    with pytest.raises(MtilError, match="ViT-B-16-quickgelu") as refused:
        backbone.load("ViT-B-16", str(vit_weights["plain"]))
    assert "\n" not in str(refused.value)
    assert backbone.load("ViT-B-16", str(vit_weights["plain"]), activation="quick_gelu").activation == "quick_gelu"
    assert backbone.load("ViT-B-16", str(vit_weights["plain"]), activation="gelu").activation == "gelu"
    assert backbone.load("ViT-B-16-quickgelu", str(vit_weights["plain"])).activation == "quick_gelu"

    # a file whose sha256 is an OpenAI release's (the hash in its download address) needs no setting
    sha = provenance.file_sha256(vit_weights["plain"])
    monkeypatch.setattr(backbone, "_openai_release_hashes", lambda: {sha: "ViT-B-16"})
    assert backbone.activation_for("ViT-B-16", str(vit_weights["plain"])) == "quick_gelu"


def test_activation_rules_without_weights():
    assert backbone.activation_for("ViT-B-16", "openai") == "quick_gelu"
    assert backbone.activation_for("ViT-B-16", "laion2b_s34b_b88k") == "gelu"
    assert backbone.activation_for("ViT-B-16", None) == "gelu"            # random init: the config's own
    assert backbone.activation_for("ViT-B-16-quickgelu", None) == "quick_gelu"
    assert backbone.activation_for("ViT-B-16", "openai", "gelu") == "gelu"   # said explicitly: the user's choice
    with pytest.raises(MtilError, match="contradicts"):
        backbone.activation_for("ViT-B-16-quickgelu", "openai", "gelu")
    # every OpenAI release address carries its sha256, so OpenAI's own files are recognised by content
    assert len(backbone._openai_release_hashes()) >= 9


def test_the_activation_is_in_the_provenance_record_and_changes_it():
    cfg = load_config("demo.yaml", ["model.pretrained=null", "data.demo=false"])
    rec = provenance.record(cfg, {})
    assert rec["backbone"] == {"kind": "random-init", "activation": "gelu"}
    cfg.model.activation = "quick_gelu"
    other = provenance.record(cfg, {})
    assert any("backbone" in d and "quick_gelu" in d for d in provenance.differences(rec, other))


def test_a_plain_openai_sized_state_dict_is_refused_in_one_line_before_anything_is_built(tmp_path, capsys):
    weights = tmp_path / "clip.bin"
    torch.save({"logit_scale": torch.tensor(4.6)}, weights)   # content is never read: the refusal comes first
    code = main(["run", "mtil_order1.yaml", "--set", f"model.pretrained={weights}", "--set",
                 f"data.root={tmp_path / 'data'}", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "model.activation: quick_gelu" in err[0]
