"""Corrector files: every malformed field refused by one error naming the file and the field, before any
network is built from what the metadata claims; saves that are whole or absent, never over a file unasked."""
import json

import pytest
import torch
from safetensors.torch import save_file

import distill.corrector_file as corrector_file
from distill.corrector import SpectralCorrector, UNetCorrector
from distill.corrector_file import CorrectorFileError, load_corrector, save_corrector


MODELS = dict(model_family="SD15", model_type="EPS", latent_format="SD15")


def spectral(t_centers=(0.2, 0.5, 0.8)) -> SpectralCorrector:
    gains = torch.linspace(0.5, 1.0, 4 * 2 * len(t_centers)).reshape(4, 2, len(t_centers))
    return SpectralCorrector(gains, torch.tensor(t_centers))


def write(path, corrector, **changes):
    """A corrector file as the pack writes it, then its metadata changed (None removes a field)."""
    save_corrector(path, corrector, **MODELS, t_range=(0.02, 0.98), steps=5, final_loss=0.1,
                   images=3)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    metadata = {k: v for k, v in (metadata | changes).items() if v is not None}
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture
def built_networks(monkeypatch):
    """The devices on which UNetCorrector networks were built while the fixture is active."""
    devices = []
    real = UNetCorrector.__init__

    def init(self, *args, **kwargs):
        devices.append(torch.empty(0).device.type)
        real(self, *args, **kwargs)

    monkeypatch.setattr(UNetCorrector, "__init__", init)
    return devices


def test_both_kinds_round_trip_exactly(tmp_path):
    net = UNetCorrector(4, levels=2, filters=8)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    for corrector in (net, spectral()):
        loaded, metadata = load_corrector(write(tmp_path / "c.safetensors", corrector))
        assert metadata["images"] == "3"
        for (k, a), (k2, b) in zip(corrector.state_dict().items(), loaded.state_dict().items()):
            assert k == k2 and torch.equal(a, b)
        (tmp_path / "c.safetensors").unlink()


@pytest.mark.parametrize("field,value,message", [
    ("architecture", "{not json", r"architecture: not JSON"),
    ("architecture", "[4, 3, 32]", r"architecture: a unet corrector's is a JSON object of exactly channels, levels, filters"),
    ("architecture", '{"channels": 4, "levels": 3}', r"architecture: a unet corrector's is a JSON object"),
    ("architecture", '{"channels": 4, "levels": 3, "filters": "32"}', r"architecture: filters '32' is not a whole number"),
    ("architecture", '{"channels": 4, "levels": 3, "filters": 100000}', r"architecture: filters 100000 is not a whole number from 1 to 1024"),
    ("architecture", '{"channels": 4, "levels": 3, "filters": 1024}', r"architecture: says filters 1024 but the tensors have 32"),
    ("architecture", '{"channels": 4, "levels": 2, "filters": 32}', r"architecture: says levels 2 but the tensors have 3"),
    ("kind", "bogus", r"kind: 'bogus' is not a corrector kind"),
    ("kind", "spectral", r"architecture: a spectral corrector's is a JSON object"),
    ("latent_channels", "four", r"latent_channels: 'four' is not a whole number from 1 to 256"),
    ("latent_channels", "16", r"latent_channels: 16, but its architecture says 4 channels"),
    ("latent_format", "../SD15", r"latent_format: '../SD15' is not a name of ComfyUI's"),
    ("model_family", "Flux dev", r"model_family: 'Flux dev' is not a name of ComfyUI's"),
    ("model_type", "", r"model_type: '' is not a name of ComfyUI's"),
    ("t_min", "nan", r"t_min: 'nan' is not a number from 0 to 1"),
    ("t_max", "0.01", r"t_min: 0.02 is not below t_max \(0.01\)"),
    ("steps", "-1", r"steps: '-1' is not a whole number"),
    ("images", "1e9", r"images: '1e9' is not a whole number"),
    ("final_loss", "low", r"final_loss: 'low' is not a number"),
    ("format_version", "4", r"format_version: '4' is not 3"),
    ("format_version", "2", r"format_version: 2: made by an earlier version of the pack, which recorded only the "
                            r"latent space, not the model"),
    ("format_version", "1", r"format_version: 1: made by an earlier version of the pack"),
    ("model_family", None, r"metadata: lacks model_family"),
    ("steps", None, r"metadata: lacks steps"),
])
def test_each_bad_metadata_field_is_one_error_naming_file_and_field(tmp_path, built_networks, field, value, message):
    path = write(tmp_path / "bad.safetensors", UNetCorrector(4), **{field: value})
    built_networks.clear()
    with pytest.raises(CorrectorFileError, match=rf"^bad\.safetensors: {message}"):
        load_corrector(path)
    assert "cpu" not in built_networks  # refused before any network was built outside the meta device


def test_a_tiny_file_claiming_a_huge_network_builds_nothing(tmp_path, built_networks):
    """The denial of service of the issue: a few hundred bytes whose metadata claims 1024 filters."""
    arch = {"channels": 4, "levels": 6, "filters": 1024}
    path = tmp_path / "huge.safetensors"
    save_file({"out.weight": torch.zeros(4, 1, 1, 1)}, str(path), metadata={
        "format_version": "3", "kind": "unet", **MODELS, "latent_channels": "4", "t_min": "0.02",
        "t_max": "0.98", "architecture": json.dumps(arch), "steps": "0", "final_loss": "0.0", "images": "0"})
    assert path.stat().st_size < 1024
    with pytest.raises(CorrectorFileError, match=r"^huge\.safetensors: tensors: a unet corrector has a 4-D tensor "
                                                 r"down\.0\.convs\.0\.weight; the file's is missing"):
        load_corrector(path)
    assert "cpu" not in built_networks


@pytest.mark.parametrize("change,message", [
    (lambda t: t.pop("out.bias"), r"tensors: out\.bias is missing"),
    (lambda t: t.update(extra=torch.zeros(1)), r"tensors: extra is not part of a unet corrector"),
    (lambda t: t.update({"out.bias": torch.zeros(5)}), r"tensors: out\.bias has shape \[5\]; a unet corrector of these sizes needs \[4\]"),
    (lambda t: t.update({"out.bias": torch.zeros(4, dtype=torch.int64)}), r"tensors: out\.bias is torch\.int64, not floating point"),
    (lambda t: t.update({"out.bias": torch.full((4,), float("nan"))}), r"tensors: out\.bias contains NaN or infinite values"),
])
def test_tensors_must_be_exactly_the_declared_network(tmp_path, change, message):
    path = write(tmp_path / "t.safetensors", UNetCorrector(4, levels=2, filters=8))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CorrectorFileError, match=rf"^t\.safetensors: {message}"):
        load_corrector(path)


@pytest.mark.parametrize("centers", [(0.8, 0.5, 0.2), (0.2, 0.2, 0.8), (-0.1, 0.5, 0.8)])
def test_t_centers_must_ascend_within_the_schedule(tmp_path, centers):
    path = write(tmp_path / "s.safetensors", spectral(centers))
    with pytest.raises(CorrectorFileError, match=r"^s\.safetensors: t_centers: not strictly ascending"):
        load_corrector(path)


def test_an_existing_file_is_replaced_only_when_asked(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"the user's file")
    with pytest.raises(CorrectorFileError, match="c.safetensors: a corrector of this name already exists"):
        save_corrector(path, spectral(), **MODELS, t_range=(0.02, 0.98), steps=0, final_loss=0.0,
                       images=0)
    assert path.read_bytes() == b"the user's file" and [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    save_corrector(path, spectral(), **MODELS, t_range=(0.02, 0.98), steps=0, final_loss=0.0, images=0,
                   overwrite=True)
    assert load_corrector(path)[1]["kind"] == "spectral"


def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"the user's file")
    real = corrector_file.save_file

    def fail_midway(tensors, filename, metadata):
        real(tensors, filename, metadata=metadata)
        raise OSError("disk full")

    monkeypatch.setattr(corrector_file, "save_file", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        save_corrector(path, spectral(), **MODELS, t_range=(0.02, 0.98), steps=0, final_loss=0.0,
                       images=0, overwrite=True)
    assert path.read_bytes() == b"the user's file" and [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
