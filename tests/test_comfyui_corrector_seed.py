"""Train LMC Corrector is a function of its inputs and seed: the U-Net's initial weights included."""
import pytest
import torch
from safetensors import safe_open

from comfy_harness import conditioning, pack, run_node, tiny_model, tiny_vae

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]


def contents(path):
    """A safetensors file's metadata and tensors (its bytes also hold the header in hash-map order)."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def test_the_same_seed_gives_the_same_unet_corrector_and_another_seed_another(corrector_folder):
    model, vae = tiny_model("eps"), tiny_vae()
    images = torch.rand((2, 64, 64, 3), generator=torch.Generator().manual_seed(5))
    files = {}
    for name, seed, global_seed in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        torch.manual_seed(global_seed)  # the global generator must not matter
        run_node("DistillTrainLMCCorrector", model=model, unconditional=conditioning(2), kind="unet",
                 filename=f"{name}.safetensors", pairs_per_latent=2, steps=3, seed=seed, images=images, vae=vae)
        files[name] = contents(corrector_folder / f"{name}.safetensors")
    (meta_a, a), (meta_b, b), (_, c) = files["a"], files["b"], files["c"]
    assert meta_a == meta_b and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
