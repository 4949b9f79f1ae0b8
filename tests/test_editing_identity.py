"""Same-prompt identity: DDS and PDS with the source prompt as the target, started at the image itself, leave it
alone through the nodes at the shipped workflows' own optimizer settings, in latent space and through a VAE."""
import json

import pytest
import torch

from comfy_harness import PACK_ROOT, conditioning, run_node, tiny_model, tiny_vae
from headless.workflow import find_node

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

EDITING = {"dds_editing": "DistillDDSLoss", "pds_editing": "DistillPDSLoss"}


def workflow_inputs(name: str) -> dict[str, dict]:
    """The widget values of the workflow's loss and Optimize Latent nodes, as shipped."""
    prompt = json.loads((PACK_ROOT / f"example_workflows/api/{name}.json").read_text())
    return {cls: {k: v for k, v in prompt[find_node(prompt, cls)]["inputs"].items() if not isinstance(v, list)}
            for cls in (EDITING[name], "DistillOptimizeLatent")}


def same_prompt_loss(name: str, model, reference: torch.Tensor, source=None):
    """The workflow's loss with one conditioning for source and target (source: another with equal values)."""
    target = conditioning(1)
    return run_node(EDITING[name], model=model, reference={"samples": reference}, target=target,
                    source=target if source is None else source, negative=conditioning(2),
                    **workflow_inputs(name)[EDITING[name]]).args[0]


@pytest.mark.parametrize("name,kind", [("dds_editing", "eps"), ("pds_editing", "flow")])
def test_same_prompt_leaves_the_latent_alone_at_the_workflows_settings(name, kind):
    """The source is a second encode of the target's prompt (equal values, another object)."""
    reference = 3 * torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(5))
    settings = workflow_inputs(name)["DistillOptimizeLatent"] | {"steps": 3}
    loss = same_prompt_loss(name, tiny_model(kind), reference, source=conditioning(1))
    out, _ = run_node("DistillOptimizeLatent", latent={"samples": reference.clone()}, loss=loss, **settings).args
    assert (out["samples"] - reference).abs().max() <= 1e-4


@pytest.mark.parametrize("name", EDITING)
def test_same_prompt_leaves_the_image_alone_through_a_vae_in_both_phases(name):
    """tiny_vae is ComfyUI's AutoencoderKL (GroupNorm, mid-block attention): cutting its latent is not encoding the
    cut, so the reference must be the original image seen as the optimized one is (resized, then 2 patches)."""
    vae = tiny_vae()
    image = torch.rand((1, 96, 128, 3), generator=torch.Generator().manual_seed(7))
    loss = same_prompt_loss(name, tiny_model("eps"), vae.encode(image))
    out, _ = run_node("DistillOptimizeImage", vae=vae, loss=loss, start="image", width=64, height=64, steps=3,
                      learning_rate=0.05, lr_end=0.01, seed=0, l2_to_init=0.0, whole_image_steps=1, patches=2,
                      native_size=64, image=image).args
    assert (out - image).abs().max() <= 1e-4


def test_a_branch_at_an_equal_latent_under_the_same_conditioning_is_evaluated_once():
    """At the reference, source = target and negative at the reference are the target's own rows: one forward of
    positive and negative, whose numbers both branches then share (a batch's rows need not round alike)."""
    from test_comfyui_nodes import counting

    model, batches = counting(tiny_model("eps"))
    reference = torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(5))
    loss = same_prompt_loss("pds_editing", model, reference, source=conditioning(1))
    run_node("DistillOptimizeLatent", latent={"samples": reference.clone()}, loss=loss,
             **workflow_inputs("pds_editing")["DistillOptimizeLatent"] | {"steps": 2})
    other = run_node("DistillPDSLoss", model=model, reference={"samples": reference}, target=conditioning(1),
                     source=conditioning(3), negative=conditioning(2),
                     **workflow_inputs("pds_editing")["DistillPDSLoss"]).args[0]
    run_node("DistillOptimizeLatent", latent={"samples": reference.clone()}, loss=other,
             **workflow_inputs("pds_editing")["DistillOptimizeLatent"] | {"steps": 2})
    assert batches == [4, 4, 6, 8]  # same prompt: 2 rows per item; another: the shared negative once at step 0
