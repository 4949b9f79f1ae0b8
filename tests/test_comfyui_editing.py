"""DDS Loss, PDS Loss and masks inside a real ComfyUI, on tiny random EPS / v-prediction / flow models."""
import dataclasses

import pytest
import torch

from comfy_harness import conditioning, pack, run_node, tiny_model, tiny_vae
from test_comfyui_nodes import counting, direct_predictions, pack_gradient, sds_loss

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

KINDS = ["eps", "v", "flow"]
SHAPE = (2, 4, 16, 16)
EDITING = {"dds": "DistillDDSLoss", "pds": "DistillPDSLoss"}


def source_latent(seed=5, shape=SHAPE):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def editing_loss(name, model, reference, cfg=7.5, source=None, **kw):
    args = dict(model=model, reference={"samples": reference}, source=conditioning(3) if source is None else source,
                target=conditioning(1), negative=conditioning(2), cfg=cfg, weighting="auto", t_min=0.02, t_max=0.98,
                t_schedule="uniform", grad_clip=0.0) | kw
    return run_node(EDITING[name], **args).args[0]


def optimize_latent(loss, latent, steps=3, **kw):
    args = dict(latent=latent, loss=loss, steps=steps, learning_rate=0.1, optimizer="adamw", lr_schedule="cosine",
                seed=0, l2_to_init=0.0) | kw
    return run_node("DistillOptimizeLatent", **args).args


@pytest.mark.parametrize("kind", KINDS)
def test_dds_gradient_equals_direct_calc_cond_batch_of_each_prompt_at_its_latent(kind):
    model = tiny_model(kind)
    reference = source_latent()
    loss = editing_loss("dds", model, reference)
    seen = pack_gradient(loss, reference + 0.2 * source_latent(6))
    z_ref = loss.loss.reference  # the reference in model space, as the loss holds it
    target = direct_predictions(model, {"positive": loss.conds["positive"], "negative": loss.conds["negative"]}, 7.5,
                                seen["x"], seen["t"], seen["eps"])
    source = direct_predictions(model, {"positive": loss.conds["source"], "negative": loss.conds["negative"]}, 7.5,
                                z_ref, seen["t"], seen["eps"])
    expected = target["cfg"] - source["cfg"]  # DDS's w(t) = 1
    assert seen["g"].abs().max() > 0
    assert (seen["g"] - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", EDITING)
def test_same_prompt_at_the_reference_gives_zero_gradient_in_comfyui(name, kind):
    # Target and source rows of the one batched forward get the same input; the model sees no difference.
    model = tiny_model(kind)
    reference = source_latent()
    seen = pack_gradient(editing_loss(name, model, reference, source=conditioning(1)), reference)
    assert seen["g"].abs().max() <= 1e-5


@pytest.mark.parametrize("name,kind,cfg,per_item", [
    *[(name, kind, 7.5, 4) for name in EDITING for kind in KINDS], *[(name, "eps", 1.0, 2) for name in EDITING]])
def test_one_forward_per_step_holds_target_and_source_at_both_latents(name, kind, cfg, per_item):
    model, batches = counting(tiny_model(kind))
    reference = source_latent()
    out, _ = optimize_latent(editing_loss(name, model, reference, cfg=cfg), {"samples": reference.clone()}, steps=3)
    shared = SHAPE[0] if cfg != 1 else 0  # at step 0 the latent is the reference: its negative rows are evaluated once
    assert batches == [per_item * SHAPE[0] - shared] + [per_item * SHAPE[0]] * 2
    assert torch.isfinite(out["samples"]).all() and not torch.equal(out["samples"], reference)


def painted(h, w, batch=1):
    """A MASK as Load Image gives it: 1 where painted (the right half of the image), 0 elsewhere."""
    mask = torch.zeros(batch, h, w)
    mask[..., w // 2:] = 1.0
    return mask


class Watched:
    """A loss that records the latent it is given at every step (model space), then computes the wrapped one."""

    def __init__(self, loss):
        self.loss, self.seen = loss, []

    def gradient(self, denoiser, x, run):
        self.seen.append(x.clone())
        return self.loss.gradient(denoiser, x, run)


def watched(loss):
    spy = Watched(loss.loss)
    return dataclasses.replace(loss, loss=spy), spy.seen


@pytest.mark.parametrize("kind", KINDS)
def test_noise_mask_edits_only_its_region_and_stays_on_the_latent(kind):
    import nodes

    reference = source_latent()
    latent = nodes.SetLatentNoiseMask().set_mask({"samples": reference.clone()}, painted(128, 128))[0]
    loss, seen = watched(editing_loss("dds", tiny_model(kind), reference))
    out, _ = optimize_latent(loss, latent, steps=4)
    assert torch.equal(out["samples"][..., :8], reference[..., :8])  # bit for bit, through process_in/out
    assert (out["samples"][..., 9:] != reference[..., 9:]).all()  # bilinear resize: one soft column at the edge
    assert out["noise_mask"] is latent["noise_mask"]
    # every step edits the region against the rest as it is, not against a rest that drifts and is put back after
    assert len(seen) == 4 and all(torch.equal(x[..., :8], seen[0][..., :8]) for x in seen)


def test_noise_mask_with_sds_and_adamw_keeps_the_unmasked_region():
    reference = source_latent()
    latent = {"samples": reference.clone(), "noise_mask": painted(128, 128).reshape(1, 1, 128, 128)}
    loss, seen = watched(sds_loss(tiny_model("eps")))
    out, _ = optimize_latent(loss, latent, steps=3, l2_to_init=1.0)
    assert torch.equal(out["samples"][..., :8], reference[..., :8])
    assert len(seen) == 3 and all(torch.equal(x[..., :8], seen[0][..., :8]) for x in seen)  # AdamW's decay too


def test_an_all_zero_noise_mask_is_refused_naming_it():
    latent = {"samples": source_latent(), "noise_mask": torch.zeros(1, 1, 128, 128)}
    with pytest.raises(ValueError, match=r"latent: its noise_mask, resized to the latent .* is zero everywhere"):
        optimize_latent(sds_loss(tiny_model("eps")), latent)
    tiny = torch.zeros(1, 1, 128, 128)
    tiny[..., 62, 62] = 1.0  # one pixel between the points a bilinear resize to 16×16 cells reads: lost in it
    with pytest.raises(ValueError, match="zero everywhere"):
        optimize_latent(sds_loss(tiny_model("eps")), {"samples": source_latent(), "noise_mask": tiny})


def optimize_image(loss, image, vae, **kw):
    args = dict(vae=vae, loss=loss, start="image", width=64, height=64, steps=3, learning_rate=0.05, lr_end=0.01,
                seed=0, l2_to_init=0.0, whole_image_steps=1, patches=2, native_size=64, image=image) | kw
    return run_node("DistillOptimizeImage", **args).args


@pytest.mark.parametrize("name", EDITING)
def test_pixel_space_editing_with_a_mask_through_both_phases(name):
    model, batches = counting(tiny_model("eps"))
    vae = tiny_vae()
    image = torch.rand((1, 96, 128, 3), generator=torch.Generator().manual_seed(7))
    loss = editing_loss(name, model, vae.encode(image))
    out, _ = optimize_image(loss, image, vae, mask=painted(96, 128))
    assert batches == [3, 8, 8]  # whole image (its negative at the unedited image once), then 2 patches, 4 rows each
    assert torch.equal(out[:, :, :64], image[:, :, :64])
    assert (out[:, :, 64:] - image[:, :, 64:]).abs().max() > 1e-3


def test_an_all_zero_image_mask_is_refused_naming_it():
    image = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(7))
    with pytest.raises(ValueError, match="mask: it is zero everywhere"):
        optimize_image(sds_loss(tiny_model("eps")), image, tiny_vae(), mask=torch.zeros(1, 64, 64))


def test_sdi_noise_reused_across_moving_patches_is_refused_naming_the_inputs():
    noise = run_node("DistillDDIMInvertNoise", inversion_steps=2, inversion_cfg=-7.5, eta=0.3, eta_placement="end",
                     tau_jitter=False, variant="renoise", refresh_every=5).args[0]
    loss = sds_loss(tiny_model("eps"), noise=noise)
    image = torch.rand((1, 96, 128, 3), generator=torch.Generator().manual_seed(7))
    with pytest.raises(ValueError, match=r"refresh_every: .*whole_image_steps \(1 of 3 steps"):
        optimize_image(loss, image, tiny_vae())


def test_reference_of_another_model_or_size_is_named():
    model = tiny_model("eps")
    with pytest.raises(ValueError, match=r"reference: this latent has 16 channels \(shape .*\) but the model .* works on 4"):
        editing_loss("dds", model, torch.ones(1, 16, 16, 16))
    loss = editing_loss("pds", model, source_latent(shape=(1, 4, 8, 8)))
    with pytest.raises(ValueError, match=r"reference: its latent is 64×64 pixels but the one being optimized is 128×128"):
        optimize_latent(loss, {"samples": source_latent()})
    with pytest.raises(ValueError, match=r"source: its conditioning is 32 wide but target's is 64"):
        editing_loss("dds", model, source_latent(), source=conditioning(3, width=32))


def test_every_editing_input_has_a_tooltip(comfy):
    for node_id in EDITING.values():
        schema = comfy.NODE_CLASS_MAPPINGS[node_id].define_schema()
        assert schema.category == "score_distillation"
        assert all(i.tooltip for i in schema.inputs), [i.id for i in schema.inputs if not i.tooltip]
