"""Optimize Image in a real ComfyUI with a tiny AutoencoderKL and tiny models."""
import pytest
import torch

from comfy_harness import conditioning, interrupt_at, run_node, tiny_model, tiny_vae

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

NATIVE = 64


def sds_loss(model, cfg=7.5):
    return run_node("DistillSDSLoss", model=model, positive=conditioning(1), negative=conditioning(2), cfg=cfg,
                    weighting="auto", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0).args[0]


def start_image(h=NATIVE, w=NATIVE, batch=1):
    return torch.rand((batch, h, w, 3), generator=torch.Generator().manual_seed(7))


def optimize_image(loss, vae=None, image=None, steps=3, seed=0, **kw):
    args = dict(vae=vae or tiny_vae(), loss=loss, start="image", width=NATIVE, height=NATIVE, steps=steps,
                learning_rate=0.05, lr_end=0.01, seed=seed, l2_to_init=0.0, whole_image_steps=150, patches=2,
                native_size=NATIVE, image=start_image() if image is None else image) | kw
    return run_node("DistillOptimizeImage", **args).args


def watched(model):
    """A clone whose UNet calls record their input size and whether autograd could see them."""
    calls = []
    m = model.clone()

    def wrapper(apply, args):
        out = apply(args["input"], args["timestep"], **args["c"])
        calls.append((tuple(args["input"].shape), torch.is_inference_mode_enabled(), out.requires_grad))
        return out

    m.set_model_unet_function_wrapper(wrapper)
    return m, calls


@pytest.mark.parametrize("kind", ["eps", "v", "flow"])
def test_the_gradient_reaches_the_pixels_and_no_model_graph_is_kept(kind):
    model, calls = watched(tiny_model(kind))
    image = start_image()
    out, plot = optimize_image(sds_loss(model), image=image)
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1
    assert (out - image).abs().max() > 1e-3  # pixels moved: the latent gradient came through the encoder
    assert calls and all(inference and not grad for _, inference, grad in calls)
    assert all(p.grad is None for p in model.model.diffusion_model.parameters())


def test_vae_still_encodes_as_before_afterwards():
    vae = tiny_vae()
    image = start_image()
    before = vae.encode(image)
    optimize_image(sds_loss(tiny_model("eps")), vae=vae, image=image, steps=1)
    assert torch.equal(vae.encode(image), before)


def test_a_large_l2_to_init_keeps_the_image_near_its_start():
    # Adam moves each pixel by at most about the learning rate per step; with the pull 1000x the
    # gradient's scale the image cannot drift: it stays within 2 learning rates of the start.
    loss, image = sds_loss(tiny_model("eps"), cfg=100.0), start_image()
    free, _ = optimize_image(loss, image=image, steps=12)
    held, _ = optimize_image(loss, image=image, steps=12, l2_to_init=1000.0)
    assert (held - image).abs().max() <= 2 * 0.05
    assert (free - image).abs().max() > 2 * (held - image).abs().max()


def test_an_image_twice_native_size_goes_through_both_phases():
    model, calls = watched(tiny_model("eps"))
    image = start_image(2 * NATIVE, 2 * NATIVE)
    out, _ = optimize_image(sds_loss(model), image=image, steps=4, whole_image_steps=2, patches=2)
    latent = NATIVE // 8
    assert [shape for shape, _, _ in calls] == [(2, 4, latent, latent)] * 2 + [(4, 4, latent, latent)] * 2
    assert out.shape == image.shape


def test_grey_synthesis_start():
    out, _ = optimize_image(sds_loss(tiny_model("eps")), start="grey", image=None, width=96, height=64, steps=2)
    assert out.shape == (1, 64, 96, 3)


def test_deterministic_per_seed():
    loss = sds_loss(tiny_model("eps"))
    a, _ = optimize_image(loss, seed=5)
    b, _ = optimize_image(loss, seed=5)
    c, _ = optimize_image(loss, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_interrupt_stops_within_one_step():
    import comfy.model_management

    model, calls = watched(tiny_model("eps"))
    with interrupt_at(2), pytest.raises(comfy.model_management.InterruptProcessingException):
        optimize_image(sds_loss(model), steps=50)
    assert len(calls) == 2


def test_taesd_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="vae: TAESD cannot pass gradients.*full VAE"):
        optimize_image(sds_loss(tiny_model("eps")), vae=tiny_vae(taesd=True))


def test_missing_start_image_is_named():
    with pytest.raises(ValueError, match="image: start is 'image' but no image is connected"):
        run_node("DistillOptimizeImage", vae=tiny_vae(), loss=sds_loss(tiny_model("eps")), start="image", width=64,
                 height=64, steps=1, learning_rate=0.1, lr_end=0.0, seed=0, l2_to_init=0.0, whole_image_steps=1,
                 patches=1, native_size=64)


def test_a_16_channel_sd3_family_vae_and_model():
    model = tiny_model("sd3")
    image = start_image()
    out, _ = optimize_image(sds_loss(model), vae=tiny_vae(channels=16), image=image, steps=2)
    assert (out - image).abs().max() > 1e-3
    latent = run_node("DistillOptimizeLatent", latent={"samples": torch.zeros(1, 16, 8, 8)}, loss=sds_loss(model),
                      steps=2, learning_rate=0.1, optimizer="adamw", lr_schedule="cosine", seed=0,
                      l2_to_init=0.0).args[0]["samples"]
    assert latent.shape == (1, 16, 8, 8) and torch.isfinite(latent).all()
