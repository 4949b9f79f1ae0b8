"""Guidance-distilled Flux (tiny, from ComfyUI's own classes): FluxGuidance reaches the model at cfg 1 in one branch
per step, and real CFG on top of an embedded guidance other than 1 is said in the log; the advised settings and
models without a guidance input say nothing."""
import logging

import pytest
import torch

from comfy_harness import run_node

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

TIMESTEPS = dict(weighting="auto", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0)


def prompts(name, guidance):
    """positive and negative of the family with FluxGuidance's value (None: no FluxGuidance applied)."""
    from families import family_conditioning

    out = {}
    for key, seed in (("positive", 1), ("negative", 2)):
        [[cond, extras]] = family_conditioning(name, seed)
        extras = {k: v for k, v in extras.items() if k != "guidance"}
        out[key] = [[cond, extras if guidance is None else extras | {"guidance": guidance}]]
    return out


def warnings_of(caplog, node_id, **inputs):
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_node(node_id, **inputs)
    return [r.getMessage() for r in caplog.records if "guidance-distilled" in r.getMessage()]


def sds_warnings(caplog, name, cfg, guidance, noise=None):
    from families import family_model

    return warnings_of(caplog, "DistillSDSLoss", model=family_model(name), cfg=cfg, noise=noise, **TIMESTEPS,
                       **prompts(name, guidance))


def test_real_cfg_on_an_embedded_guidance_is_said_in_the_log(caplog):
    [message] = sds_warnings(caplog, "flux", 100.0, 3.5)
    assert message.startswith("SDS Loss: this model is guidance-distilled")
    assert "guidance (3.5), and cfg 100 applies real CFG on top" in message
    assert "put FluxGuidance 1 on every prompt; or set cfg 1 and FluxGuidance on the positive" in message
    [message] = sds_warnings(caplog, "flux", 8.5, None)
    assert "not set (ComfyUI embeds the model's default, 3.5 for Flux dev)" in message
    inversion = run_node("DistillDDIMInvertNoise", inversion_steps=10, inversion_cfg=-6.5, eta=0.3,
                         eta_placement="every_step", tau_jitter=True, variant="inverted", refresh_every=1).args[0]
    [message] = sds_warnings(caplog, "flux", 1.0, 3.5, noise=inversion)
    assert "inversion_cfg -6.5 applies real CFG" in message


@pytest.mark.parametrize("name,cfg,guidance", [("flux", 1.0, 3.5), ("flux", 100.0, 1.0), ("lumina2", 100.0, None),
                                               ("sd3", 100.0, None)])
def test_the_advised_settings_and_models_without_a_guidance_input_are_quiet(caplog, name, cfg, guidance):
    assert sds_warnings(caplog, name, cfg, guidance) == []


def test_nfsd_and_dds_say_it_too(caplog):
    from families import family_latent, family_model

    model, conds = family_model("flux"), prompts("flux", 3.5)
    [nfsd] = warnings_of(caplog, "DistillNFSDGuidance", model=model, nfsd_negative=conds["negative"], cfg=7.5,
                         threshold=0.2, **conds, **TIMESTEPS)
    [dds] = warnings_of(caplog, "DistillDDSLoss", model=model, reference={"samples": family_latent("flux")},
                        source=conds["negative"], target=conds["positive"], negative=conds["negative"], cfg=7.5,
                        **TIMESTEPS)
    assert nfsd.startswith("NFSD Guidance: ") and dds.startswith("DDS Loss: ") and "cfg 7.5" in dds


def test_at_cfg_1_one_branch_per_step_carries_flux_guidance(caplog):
    from families import family_latent, family_model

    model = family_model("flux").clone()
    seen = []

    def record(apply, args):
        seen.append((args["input"].shape[0], args["c"]["guidance"].tolist()))
        return apply(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(record)
    loss = run_node("DistillSDSLoss", model=model, cfg=1.0, **TIMESTEPS, **prompts("flux", 2.0)).args[0]
    out = run_node("DistillOptimizeLatent", latent={"samples": family_latent("flux")}, loss=loss, steps=2,
                   learning_rate=0.1, optimizer="adamw", lr_schedule="cosine", seed=0, l2_to_init=0.0).args[0]
    assert seen == [(1, [2.0])] * 2 and torch.isfinite(out["samples"]).all()
