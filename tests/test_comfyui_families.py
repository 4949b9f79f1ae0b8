"""Every pack node on every family ComfyUI loads, on tiny random models of ComfyUI's own classes (tests/families.py):
it runs and keeps KSampler's shapes, and the predictions the losses use are a CFGGuider's to float32 rounding."""
import pytest
import torch

from comfy_harness import pack, run_node

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

FAMILY_NAMES = ("sdxl", "sdxl_edm", "sdxl_vzsnr", "sd2_v", "sd3", "flux", "lumina2", "wan21", "qwen_image")


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def fam(request):
    import families

    assert families.FAMILIES == FAMILY_NAMES
    return families.family(request.param)


def timesteps(**kw) -> dict:
    return dict(weighting="auto", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0) | kw


def sds_loss(fam, cfg=7.5, **kw):
    return run_node("DistillSDSLoss", model=fam.model, positive=fam.positive, negative=fam.negative, cfg=cfg,
                    **timesteps(**kw)).args[0]


def optimize_latent(loss, latent, steps=1, **kw):
    args = dict(latent=latent, loss=loss, steps=steps, learning_rate=0.1, optimizer="adamw", lr_schedule="cosine",
                seed=0, l2_to_init=0.0) | kw
    return run_node("DistillOptimizeLatent", **args).args[0]["samples"]


def ksampler(fam, latent: dict) -> torch.Tensor:
    """KSampler's result for the same latent, one euler step."""
    import nodes

    with torch.inference_mode():
        return nodes.common_ksampler(fam.model, 0, 1, 2.0, "euler", "simple", fam.positive, fam.negative,
                                     latent)[0]["samples"]


def recording(denoiser):
    """The denoiser, recording every call's requests, σ and predictions."""
    calls = []

    class Recording:
        sigmas, one_t_per_batch, coefficients = denoiser.sigmas, denoiser.one_t_per_batch, denoiser.coefficients

        def __call__(self, requests, sigma):
            out = denoiser(requests, sigma)
            calls.append((requests, sigma.clone(), [{k: v.clone() for k, v in o.items()} for o in out]))
            return out

    return Recording(), calls


def guider_x0(fam, positive, negative, cfg, x_noisy, sigma) -> torch.Tensor:
    """A CFGGuider's guided x0-prediction at a model-space x_σ, called as ComfyUI's samplers call it."""
    import comfy.samplers

    found = {}

    class AtX(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            found["x0"] = model_wrap(x_noisy, sigma, **extra_args).clone()
            return latent_image

    guider = comfy.samplers.CFGGuider(fam.model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    ms = fam.model.get_model_object("model_sampling")
    with torch.inference_mode():
        guider.sample(torch.zeros_like(x_noisy), torch.zeros_like(x_noisy), AtX(),
                      torch.stack([ms.sigma_max, ms.sigma_min]).float(), seed=0)
    return found["x0"]


def test_sds_predictions_equal_a_cfg_guiders(fam):
    """positive, negative and guided x0 at the loss's own x_σ and σ (two items, two levels) against CFGGuider."""
    import families

    evaluation, distill = pack("nodes.evaluation"), pack("distill")
    latent = families.family_latent(fam.name, batch=2)
    loss = sds_loss(fam, cfg=7.5)
    calls = []

    def run(denoiser, x):
        recorder, found = recording(denoiser)
        loss.loss.gradient(recorder, x, distill.Run(distill.item_generators(0, len(x))))
        calls.extend(found)
        return x

    with torch.inference_mode():
        evaluation.run_with_model(loss.model, loss.conds, latent, 0, run)
    (requests, sigma, out), = calls
    assert sigma[0] != sigma[1]
    x_noisy, x0 = requests[0].x_noisy, out[0]
    expected = {"cfg": guider_x0(fam, fam.positive, fam.negative, 7.5, x_noisy, sigma),
                "positive": guider_x0(fam, fam.positive, fam.negative, 1.0, x_noisy, sigma),
                "negative": guider_x0(fam, fam.negative, fam.negative, 1.0, x_noisy, sigma)}
    for name, want in expected.items():
        assert x0[name].shape == latent.shape
        assert (x0[name] - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item()), name


def masked(fam) -> dict:
    """The family's latent with a noise mask over its top half: one mask per frame for a video latent (frames of a
    4·(T − 1) + 1 frame clip, as the VAE makes T latent frames), as Set Latent Noise Mask gives it."""
    h, w = (8 * n for n in fam.latent.shape[-2:])
    frames = 4 * (fam.latent.shape[2] - 1) + 1 if fam.video else 1
    mask = torch.zeros(frames, h, w)
    mask[..., : h // 2, :] = 1.0
    return {"samples": fam.latent, "noise_mask": mask}


def test_every_latent_loss_keeps_the_shape_and_a_mask_as_ksampler_resizes_it(fam):
    import comfy.sampler_helpers

    latent = {"samples": fam.latent}
    noise = run_node("DistillDDIMInvertNoise", inversion_steps=2, inversion_cfg=-6.5, eta=0.3,
                     eta_placement="every_step", tau_jitter=True, variant="inverted", refresh_every=1).args[0]
    losses = {
        "sdi": sds_loss(fam, cfg=8.5, noise=noise),
        "nfsd": run_node("DistillNFSDGuidance", model=fam.model, positive=fam.positive, negative=fam.negative,
                         nfsd_negative=fam.negative, cfg=7.5, threshold=0.2, **timesteps()).args[0],
    }
    for name in ("DistillDDSLoss", "DistillPDSLoss"):
        losses[name] = run_node(name, model=fam.model, reference=latent, source=fam.negative, target=fam.positive,
                                negative=fam.negative, cfg=7.5, **timesteps()).args[0]
    prompts = dict(model=fam.model, positive=fam.positive, negative=fam.negative)
    losses |= {
        "csd": run_node("DistillCSDLoss", **prompts, csd_negative=fam.negative, scale=1.0, ramp=0.5, late_t_max=0.5,
                        **timesteps()).args[0],
        "ism": run_node("DistillISMLoss", **prompts, cfg=7.5, delta_t=0.08, inversion_interval=0.2,
                        **timesteps(t_max=0.5)).args[0],
        "sds-bridge": run_node("DistillSDSBridgeLoss", **prompts, bridge_target=fam.positive,
                               bridge_source=fam.negative, cfg=40.0, stage_two=0.5, **timesteps()).args[0],
        "asd": run_node("DistillASDLoss", **prompts, cfg=7.5, shift=0.1, **timesteps()).args[0],
    }
    for name, loss in losses.items():
        out = optimize_latent(loss, latent)
        assert out.shape == fam.latent.shape and torch.isfinite(out).all(), name
        assert not torch.equal(out, fam.latent), name
    with_mask = masked(fam)
    out = optimize_latent(sds_loss(fam), with_mask)
    kept = comfy.sampler_helpers.prepare_mask(with_mask["noise_mask"], fam.latent.shape, "cpu") == 0
    assert out.shape == fam.latent.shape and kept.any()
    assert torch.equal(out[kept], fam.latent[kept]) and not torch.equal(out, fam.latent)


def test_a_corrector_trained_on_the_family_drives_lmc_sds_with_fixed_noise(fam, corrector_folder):
    pixels = 8 * fam.latent.shape[-1]
    images = torch.rand((2, pixels, pixels, 3), generator=torch.Generator().manual_seed(3))
    corrector, plot = run_node("DistillTrainLMCCorrector", model=fam.model, unconditional=fam.negative,
                               kind="spectral", filename=f"{fam.name}.safetensors", pairs_per_latent=2, steps=1,
                               seed=0, images=images, vae=fam.vae).args
    assert plot.shape[-1] == 3
    loss = sds_loss(fam, cfg=8.0, corrector=corrector, fixed_noise=True)
    out = optimize_latent(loss, {"samples": fam.latent}, steps=2)
    assert out.shape == fam.latent.shape and torch.isfinite(out).all()


def test_optimize_image_through_the_familys_vae(fam):
    image = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(7))
    out, plot = run_node("DistillOptimizeImage", vae=fam.vae, loss=sds_loss(fam), start="image", width=64,
                         height=64, steps=1, learning_rate=0.05, lr_end=0.01, seed=0, l2_to_init=0.0,
                         whole_image_steps=1, patches=1, native_size=64, image=image).args
    assert out.shape == image.shape and torch.isfinite(out).all() and not torch.equal(out, image)


def wan():
    import families

    return families.family("wan21")


def test_a_4d_latent_into_wan_is_one_frame_as_in_ksampler():
    """KSampler unsqueezes a 4-D latent to [B, C, 1, H, W] for Wan; process_in would otherwise broadcast a B = 1 latent
    to [1, 16, 16, H, W]."""
    import families

    fam = wan()
    for samples in (torch.zeros(1, 16, 8, 8), torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))):
        out = optimize_latent(sds_loss(fam), {"samples": samples})
        assert out.shape == ksampler(fam, {"samples": samples}).shape == (1, 16, 1, 8, 8)
    empty = families.empty_latent("wan21")
    assert optimize_latent(sds_loss(fam), empty).shape == empty["samples"].shape == (1, 16, 2, 8, 8)


def test_qwen_image_from_empty_sd3_latent_image_runs():
    import families
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    fam = families.family("qwen_image")
    empty = EmptySD3LatentImage.execute(width=128, height=128, batch_size=1)[0]
    assert empty["samples"].shape == (1, 16, 16, 16)
    out = optimize_latent(sds_loss(fam), empty, steps=2)
    assert out.shape == ksampler(fam, empty).shape == (1, 16, 1, 16, 16) and torch.isfinite(out).all()


def test_empty_latent_images_four_channel_zeros_are_taken_by_a_16_channel_model():
    import families
    import nodes

    fam = families.family("sd3")
    empty = nodes.EmptyLatentImage().generate(128, 128, 1)[0]
    out = optimize_latent(sds_loss(fam), empty)
    assert out.shape == ksampler(fam, empty).shape == (1, 16, 16, 16)


def test_a_latent_that_fits_no_way_is_refused_with_the_fix():
    import families

    wan_model, sd3 = wan(), families.family("sd3")
    with pytest.raises(ValueError, match=r"latent: its samples are a 5-D tensor .* \(SD3\) works on 4-D latents"):
        optimize_latent(sds_loss(sd3), {"samples": torch.ones(1, 16, 2, 8, 8)})
    with pytest.raises(ValueError, match=r"latent: this latent has 4 channels .* \(WAN21_T2V\) works on 16"):
        optimize_latent(sds_loss(wan_model), {"samples": torch.ones(1, 4, 2, 8, 8)})
    with pytest.raises(ValueError, match=r"vae: it makes 2-dimensional latents but the model \(WAN21_T2V\) works on "
                                         r"3-dimensional ones"):
        run_node("DistillOptimizeImage", vae=sd3.vae, loss=sds_loss(wan_model), start="grey", width=64, height=64,
                 steps=1, learning_rate=0.05, lr_end=0.01, seed=0, l2_to_init=0.0, whole_image_steps=1, patches=1,
                 native_size=64)


def test_optimize_image_through_the_wan_vae_whose_norms_were_loaded_in_inference_mode():
    """A GPU load inside ComfyUI's inference mode leaves the Wan VAE's RMS_norm gammas (plain parameters, outside
    ComfyUI's ops) as inference tensors, which autograd cannot save."""
    import families

    fam, vae = families.family("qwen_image"), families.family_vae("qwen_image", seed=1)
    with torch.inference_mode():
        for m in vae.first_stage_model.modules():
            for p in m.parameters(recurse=False):
                if not hasattr(m, "comfy_cast_weights"):
                    p.data = p.data.clone()
    assert any(p.is_inference() for p in vae.first_stage_model.parameters())
    out, _ = run_node("DistillOptimizeImage", vae=vae, loss=sds_loss(fam), start="grey", width=64, height=64, steps=1,
                      learning_rate=0.05, lr_end=0.01, seed=0, l2_to_init=0.0, whole_image_steps=1, patches=1,
                      native_size=64).args
    assert out.shape == (1, 64, 64, 3) and not torch.equal(out, torch.full_like(out, 0.5))
