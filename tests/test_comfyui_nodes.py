"""SDS Loss and Optimize Latent inside a real ComfyUI, on tiny random EPS / v-prediction / flow models."""
import pytest
import torch

from comfy_harness import conditioning, interrupt_at, pack, progress_hook, run_node, tiny_model
from rng import replay_draws

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

KINDS = ["eps", "v", "flow"]
SHAPE = (2, 4, 16, 16)


def sds_loss(model, cfg=7.5, **kw):
    args = dict(model=model, positive=conditioning(1), negative=conditioning(2), cfg=cfg, weighting="sds",
                t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0) | kw
    return run_node("DistillSDSLoss", **args).args[0]


def optimize_latent(loss, latent=None, steps=3, seed=0, **kw):
    args = dict(latent={"samples": torch.zeros(SHAPE) if latent is None else latent}, loss=loss, steps=steps,
                learning_rate=0.1, optimizer="adamw", lr_schedule="cosine", seed=seed, l2_to_init=0.0) | kw
    return run_node("DistillOptimizeLatent", **args).args


def pack_gradient(loss, latent, seed=0):
    """The pack's SDS gradient at one step, with the draws it made: (g, t, ε, x) in model space."""
    distill, evaluation = pack("distill"), pack("nodes.evaluation")
    seen = {}

    def run(denoiser, x):
        gens = distill.item_generators(seed, x.shape[0])
        seen["t"], seen["eps"] = replay_draws(loss.loss, gens, x.shape)
        seen["g"] = loss.loss.gradient(denoiser, x, distill.Run(gens))
        seen["x"] = x.clone()
        return x

    with torch.inference_mode():
        evaluation.run_with_model(loss.model, loss.conds, latent, seed, run)
    return seen


def direct_predictions(model, conds, cfg, x, t, eps):
    """Every branch's ε̂ written directly on ComfyUI's primitives (CFGGuider, calc_cond_batch, the model's σ),
    the guided ε̂ under "cfg" (post-CFG patches applied), and w = 1 − ᾱ under "w"."""
    import comfy.samplers
    import comfy.model_sampling

    result = {}
    names = list(conds)

    class Direct(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            ms = model_wrap.inner_model.model_sampling
            flow = isinstance(ms, comfy.model_sampling.CONST)
            sigma = pack("distill.schedule").sigma_at(ms.sigmas.float(), t).float()
            if not flow:  # the pack's schedule fraction is ComfyUI's percent, reversed
                pct = torch.tensor([ms.percent_to_sigma(1 - ti.item()) for ti in t])
                assert torch.allclose(sigma, pct, rtol=1e-5)
            s = sigma.view(-1, 1, 1, 1)
            x_noisy = ms.noise_scaling(sigma, eps, x)
            out = comfy.samplers.calc_cond_batch(model_wrap.inner_model, [model_wrap.conds[n] for n in names],
                                                 x_noisy, sigma, extra_args["model_options"])
            x0 = dict(zip(names, out))
            cond, uncond = x0["positive"], x0["negative"]
            guided = uncond + cfg * (cond - uncond)
            for fn in extra_args["model_options"].get("sampler_post_cfg_function", []):
                guided = fn({"denoised": guided, "cond_denoised": cond, "uncond_denoised": uncond, "sigma": sigma,
                             "input": x_noisy, "cond_scale": cfg, "model": model_wrap.inner_model,
                             "model_options": extra_args["model_options"], "cond": None, "uncond": None})
            a = (1 - s) if flow else torch.ones_like(s)
            result.update({n: (x_noisy - a * v) / s for n, v in x0.items()})
            result["cfg"] = (x_noisy - a * guided) / s
            result["w"] = 1 - a**2 / (a**2 + s**2)
            return latent_image

    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds(conds)
    ms = model.get_model_object("model_sampling")
    with torch.inference_mode():
        guider.sample(torch.zeros_like(x), x, Direct(), torch.stack([ms.sigma_max, ms.sigma_min]).float())
    return result


def direct_gradient(model, positive, negative, cfg, x, t, eps):
    """SDS written directly: w·(CFG − ε)."""
    e = direct_predictions(model, {"positive": positive, "negative": negative}, cfg, x, t, eps)
    return e["w"] * (e["cfg"] - eps)


@pytest.mark.parametrize("kind", KINDS)
def test_sds_gradient_equals_direct_calc_cond_batch(kind):
    model = tiny_model(kind)
    loss = sds_loss(model, cfg=7.5)
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    seen = pack_gradient(loss, latent)
    expected = direct_gradient(model, loss.conds["positive"], loss.conds["negative"], 7.5, seen["x"], seen["t"],
                               seen["eps"])
    assert seen["g"].abs().max() > 0
    assert (seen["g"] - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_post_cfg_patch_changes_the_gradient_as_comfyui_applies_it():
    model = tiny_model("eps")
    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(lambda args: args["denoised"] * 0.5)
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    plain = pack_gradient(sds_loss(model), latent)
    seen = pack_gradient(sds_loss(patched), latent)
    assert (seen["g"] - plain["g"]).abs().max() > 1e-3
    loss = sds_loss(patched)
    expected = direct_gradient(patched, loss.conds["positive"], loss.conds["negative"], 7.5, seen["x"], seen["t"],
                               seen["eps"])
    assert (seen["g"] - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


def counting(model):
    """A clone whose UNet calls are counted through ComfyUI's model_function_wrapper."""
    batches = []
    counted = model.clone()

    def wrapper(apply_model, args):
        batches.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted.set_model_unet_function_wrapper(wrapper)
    return counted, batches


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cfg,per_item", [(7.5, 2), (1.0, 1)])
def test_one_batched_forward_per_step(kind, cfg, per_item):
    model, batches = counting(tiny_model(kind))
    optimize_latent(sds_loss(model, cfg=cfg), steps=4)
    assert batches == [per_item * SHAPE[0]] * 4


@pytest.mark.parametrize("kind", KINDS)
def test_optimize_latent_is_deterministic_per_seed(kind):
    loss = sds_loss(tiny_model(kind))
    a, plot = optimize_latent(loss, seed=11)
    b, _ = optimize_latent(loss, seed=11)
    c, _ = optimize_latent(loss, seed=12)
    assert torch.equal(a["samples"], b["samples"])
    assert not torch.equal(a["samples"], c["samples"])
    assert a["samples"].shape == SHAPE
    assert plot.ndim == 4 and plot.shape[-1] == 3 and 0 <= plot.min() and plot.max() <= 1


def test_progress_and_a_preview_every_step():
    updates = []
    with progress_hook(lambda value, total, preview, node_id=None: updates.append((value, total, preview))):
        optimize_latent(sds_loss(tiny_model("eps")), steps=5)
    assert [(v, t) for v, t, _ in updates] == [(i, 5) for i in range(1, 6)]
    assert all(p is not None for _, _, p in updates)


def test_interrupt_stops_within_one_step():
    import comfy.model_management

    model, batches = counting(tiny_model("eps"))
    with interrupt_at(3), pytest.raises(comfy.model_management.InterruptProcessingException):
        optimize_latent(sds_loss(model), steps=50)
    assert len(batches) == 3


def test_latent_of_another_family_is_refused_with_the_fix():
    loss = sds_loss(tiny_model("eps"))
    with pytest.raises(ValueError, match=r"latent: this latent has 16 channels .* works on 4.*EmptySD3LatentImage"):
        optimize_latent(loss, latent=torch.ones(1, 16, 16, 16))


def test_non_finite_latent_is_refused():
    latent = torch.zeros(SHAPE)
    latent[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="latent contains NaN or infinite values"):
        optimize_latent(sds_loss(tiny_model("eps")), latent=latent)


def test_bad_steps_and_timesteps_are_named(comfy):
    node = comfy.NODE_CLASS_MAPPINGS["DistillSDSLoss"]
    assert "t_min (0.9) must be below t_max (0.1)" in node.validate_inputs(t_min=0.9, t_max=0.1)
    assert node.validate_inputs(t_min=0.1, t_max=0.9) is True
    with pytest.raises(ValueError, match="t_min"):
        sds_loss(tiny_model("eps"), t_min=0.5, t_max=0.5)
    with pytest.raises(ValueError, match="steps: 0 is outside its range; set a whole number from 1 to 10000"):
        optimize_latent(sds_loss(tiny_model("eps")), steps=0)


def test_every_input_has_a_tooltip_and_one_category(comfy):
    for node_id in ("DistillSDSLoss", "DistillNFSDGuidance", "DistillDDIMInvertNoise", "DistillLMCCorrector",
                    "DistillTrainLMCCorrector", "DistillOptimizeLatent", "DistillOptimizeImage", "DistillCSDLoss",
                    "DistillISMLoss", "DistillSDSBridgeLoss", "DistillASDLoss", "DistillSaveColouredGLB"):
        schema = comfy.NODE_CLASS_MAPPINGS[node_id].define_schema()
        assert schema.category == "score_distillation"
        assert all(i.tooltip for i in schema.inputs), [i.id for i in schema.inputs if not i.tooltip]


def nfsd_loss(model, cfg=7.5, threshold=0.5, nfsd_negative=None, **kw):
    args = dict(model=model, positive=conditioning(1), negative=conditioning(2),
                nfsd_negative=conditioning(3) if nfsd_negative is None else nfsd_negative, cfg=cfg,
                threshold=threshold, weighting="sds", t_min=0.02, t_max=0.98, t_schedule="uniform",
                grad_clip=0.0) | kw
    return run_node("DistillNFSDGuidance", **args).args[0]


@pytest.mark.parametrize("kind", KINDS)
def test_nfsd_gradient_equals_direct_three_branch_calc_cond_batch(kind):
    model = tiny_model(kind)
    loss = nfsd_loss(model, threshold=0.5)
    latent = torch.randn((8, *SHAPE[1:]), generator=torch.Generator().manual_seed(5))
    seen = pack_gradient(loss, latent)
    above = (seen["t"] >= 0.5).float().view(-1, 1, 1, 1)
    assert 0 < above.sum() < len(above), "the batch should straddle the threshold"
    e = direct_predictions(model, loss.conds, 7.5, seen["x"], seen["t"], seen["eps"])
    expected = e["w"] * (e["cfg"] - above * e["nfsd_negative"])
    assert (seen["g"] - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
def test_nfsd_runs_one_forward_of_three_branches_per_step(kind):
    model, batches = counting(tiny_model(kind))
    optimize_latent(nfsd_loss(model), steps=4)
    assert batches == [3 * SHAPE[0]] * 4


def test_nfsd_negative_missing_or_of_another_width_is_named():
    with pytest.raises(ValueError, match="nfsd_negative: no conditioning is connected"):
        nfsd_loss(tiny_model("eps"), nfsd_negative=[])
    with pytest.raises(ValueError, match="nfsd_negative: its conditioning is 32 wide but positive's is 64"):
        nfsd_loss(tiny_model("eps"), nfsd_negative=conditioning(3, width=32))


def ddim_noise(**kw):
    args = dict(inversion_steps=10, inversion_cfg=-7.5, eta=0.3, eta_placement="end", tau_jitter=False,
                variant="renoise", refresh_every=1) | kw
    return run_node("DistillDDIMInvertNoise", **args).args[0]


def sdi_loss(model, noise):
    return sds_loss(model, cfg=7.5, t_min=0.2, t_max=0.98, t_schedule="linear_anneal", noise=noise)


@pytest.mark.parametrize("kind", KINDS)
def test_sdi_model_calls_per_step_are_its_inversion_grid_plus_one(kind):
    steps = 5
    model, batches = counting(tiny_model(kind))
    out, _ = optimize_latent(sdi_loss(model, ddim_noise()), steps=steps)
    distill, inversion = pack("distill"), pack("distill.inversion")
    gens = distill.item_generators(0, SHAPE[0])
    expected = []
    for step in range(steps):
        t = pack("distill.timesteps").sample_fractions("linear_anneal", 0.2, 0.98, step / (steps - 1), gens)
        expected += [2 * SHAPE[0]] * (len(inversion.inversion_grid(float(t[0]), float(t[0]), 10)) - 1) + [2 * SHAPE[0]]
    assert batches == expected
    assert torch.isfinite(out["samples"]).all()


def test_refresh_every_cuts_inversion_calls_by_about_k():
    steps = 20
    calls = {}
    for k in (1, 5):
        model, batches = counting(tiny_model("eps"))
        optimize_latent(sdi_loss(model, ddim_noise(refresh_every=k)), steps=steps)
        calls[k] = len(batches) - steps  # the loss's own evaluation is one call per step
    assert 4 <= calls[1] / calls[5] <= 6.5, calls


def evaluate_in_comfyui(model, conds, run):
    """run(denoiser) inside the pack's evaluation path with these conds; returns what run returned."""
    evaluation, seen = pack("nodes.evaluation"), {}

    def inside(denoiser, x):
        seen["out"] = run(denoiser)
        return x

    with torch.inference_mode():
        evaluation.run_with_model(model, conds, torch.zeros(SHAPE), 0, inside)
    return seen["out"]


def area(cond, x, y, size):
    import node_helpers

    return node_helpers.conditioning_set_values(cond, {"area": (size // 8, size // 8, y // 8, x // 8), "strength": 1.0,
                                                       "set_area_to_bounds": False})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_area", [False, True], ids=["plain", "area"])
def test_branches_at_a_second_latent_equal_their_own_evaluation_in_one_forward(kind, with_area):
    # The second latent's branches are cut from it as ComfyUI cuts an area cond, so an area-restricted
    # source prompt gives what a separate KSampler-style evaluation at that latent gives. ComfyUI copies
    # an area entry to every other branch and runs the area-sized inputs as a second batch, as in KSampler.
    request = pack("distill.denoiser").Request
    model, batches = counting(tiny_model(kind))
    source = conditioning(3) + (area(conditioning(4), 0, 0, 64) if with_area else [])
    conds = {"positive": conditioning(1), "negative": conditioning(2), "source": source}
    g = torch.Generator().manual_seed(0)
    x_a, x_b = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    sigma = torch.tensor([2.0, 0.5])
    both = evaluate_in_comfyui(model, conds, lambda d: d([request(x_a, 7.5), request(x_b, 5.0, "source")], sigma))
    assert batches == [4 * SHAPE[0]] * (2 if with_area else 1)  # pos and neg at x_a, source and neg at x_b
    alone = evaluate_in_comfyui(model, conds, lambda d: (d([request(x_a, 7.5)], sigma), d([request(x_b, 5.0, "source")], sigma)))
    for together, separate in zip(both, (alone[0][0], alone[1][0])):
        assert together.keys() == separate.keys()
        for k in together:
            assert torch.allclose(together[k], separate[k], atol=1e-5), k
    assert not torch.allclose(both[0]["negative"], both[1]["negative"])


def test_timestep_ranged_conditioning_gives_the_whole_batch_one_t():
    # ComfyUI applies a ranged cond by the batch's first item; items at their own t would follow item 0.
    import node_helpers

    model = tiny_model("eps")
    ranged = node_helpers.conditioning_set_values(conditioning(1), {"start_percent": 0.0, "end_percent": 0.5})
    plain, limited = sds_loss(model), sds_loss(model, positive=ranged)
    latent = torch.randn((4, *SHAPE[1:]), generator=torch.Generator().manual_seed(5))
    free, shared = pack_gradient(plain, latent), pack_gradient(limited, latent)
    assert len(set(free["t"].tolist())) == 4
    replayed = shared["t"][0].item()
    seen = {}

    def record(denoiser):
        seen["shared"] = denoiser.one_t_per_batch
        return None

    evaluate_in_comfyui(model, limited.conds, record)
    assert seen["shared"]
    expected = direct_gradient(model, ranged, limited.conds["negative"], 7.5, shared["x"],
                               torch.full((4,), replayed, dtype=torch.float64), shared["eps"])
    assert (shared["g"] - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
def test_ddim_sample_is_comfyuis_euler_sampler_ending_at_sigma_zero(kind):
    # DDIM in the model's own (a, b) view is k-diffusion's Euler step x + (σ′ − σ)·(x − x̂0)/σ for VE and flow
    # models alike; ComfyUI's sampler, on the pack's levels and ending at σ = 0, is the independent reference.
    import comfy.k_diffusion.sampling

    distill = pack("distill")
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    steps = 6

    def both(d):
        levels = distill.schedule.sigma_at(d.sigmas, torch.arange(steps, 0, -1) / steps)
        start = d.coefficients(levels[:1])[1] * noise
        sigmas = torch.cat([levels, torch.zeros(1)])
        reference = comfy.k_diffusion.sampling.sample_euler(d.guider, start, sigmas, {"model_options": d.model_options,
                                                                                      "seed": 0}, disable=True)
        return distill.ddim_sample(d, noise, steps), reference

    ours, reference = evaluate_in_comfyui(tiny_model(kind), {"positive": conditioning(1)}, both)
    assert torch.allclose(ours, reference, atol=1e-4 * reference.abs().max())
