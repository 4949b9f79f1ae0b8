"""Bad inputs posted to a live server, as a careless or hostile user would send them.

Each case is refused naming its input, either by POST /prompt or by the node before any work; afterwards
the server still runs a valid prompt with a bit-identical result, no corrector was written or changed,
and nothing in a folder outside ComfyUI's base directory was read or written (the server logs every file
access there; a test node that does read one shows that the log sees it).
"""
import hashlib
import json
import os
import pickle
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfy_harness import tiny_sds_prompt

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

GOOD = "distill_good.safetensors"


@dataclass(frozen=True)
class Case:
    id: str
    prompt: dict
    input: str
    message: str
    at: str  # "prompt": refused by POST /prompt; "run": the node stops before any work


def with_inputs(prompt: dict, node: str, **inputs) -> dict:
    prompt = json.loads(json.dumps(prompt))
    prompt[node]["inputs"].update(inputs)
    return prompt


def sds(**inputs) -> dict:
    return with_inputs(tiny_sds_prompt(steps=2), "4", **inputs)


def nfsd(**inputs) -> dict:
    prompt = sds()
    sds_inputs = {k: v for k, v in prompt["4"]["inputs"].items() if k != "cfg"}
    prompt["9"] = {"class_type": "DistillTestConditioning", "inputs": {"seed": 3}}
    prompt["4"] = {"class_type": "DistillNFSDGuidance", "inputs": sds_inputs | {
        "nfsd_negative": ["9", 0], "cfg": 7.5, "threshold": 0.2} | inputs}
    return prompt


def variant(node: str, **inputs) -> dict:
    """One of CSD, ISM, SDS-Bridge or ASD Loss in SDS Loss's place, its extra prompts a third conditioning."""
    prompt = sds()
    common = {k: v for k, v in prompt["4"]["inputs"].items() if k not in ("cfg", "weighting")}
    prompt["9"] = {"class_type": "DistillTestConditioning", "inputs": {"seed": 3}}
    own = {"DistillCSDLoss": {"csd_negative": ["9", 0], "scale": 1.0, "ramp": 0.5, "late_t_max": 0.5},
           "DistillISMLoss": {"cfg": 7.5, "delta_t": 0.08, "inversion_interval": 0.2},
           "DistillSDSBridgeLoss": {"bridge_target": ["2", 0], "bridge_source": ["9", 0], "cfg": 40.0,
                                    "stage_two": 0.5},
           "DistillASDLoss": {"cfg": 7.5, "shift": 0.1}}[node]
    prompt["4"] = {"class_type": node, "inputs": common | {"weighting": "auto"} | own | inputs}
    return prompt


def ddim(**inputs) -> dict:
    prompt = sds(cfg=7.5, noise=["9", 0])
    prompt["9"] = {"class_type": "DistillDDIMInvertNoise", "inputs": {
        "inversion_steps": 2, "inversion_cfg": -7.5, "eta": 0.3, "eta_placement": "end", "tau_jitter": True,
        "variant": "renoise", "refresh_every": 1} | inputs}
    return prompt


def lmc(**inputs) -> dict:
    prompt = sds(cfg=8.0, corrector=["9", 0])
    prompt["9"] = {"class_type": "DistillLMCCorrector", "inputs": {"corrector_name": GOOD} | inputs}
    return prompt


def train(**inputs) -> dict:
    return {
        "1": {"class_type": "DistillTestTinyModel", "inputs": {"kind": "eps", "seed": 0}},
        "2": {"class_type": "DistillTestConditioning", "inputs": {"seed": 2}},
        "3": {"class_type": "DistillTestTinyVAE", "inputs": {"seed": 0}},
        "4": {"class_type": "DistillTrainLMCCorrector", "inputs": {
            "model": ["1", 0], "unconditional": ["2", 0], "kind": "spectral", "filename": "distill_new.safetensors",
            "pairs_per_latent": 1, "steps": 1, "seed": 0, "image_size": 64, "vae": ["3", 0]} | inputs},
    }


def optimize_latent(shape=None, **inputs) -> dict:
    prompt = with_inputs(tiny_sds_prompt(steps=2), "6", **inputs)
    if shape is not None:
        prompt["5"] = {"class_type": "DistillTestShapedLatent", "inputs": {"shape": shape}}
    return prompt


def optimize_image(shape="1,64,64,3", **inputs) -> dict:
    prompt = sds(cfg=7.5)
    for node in ("5", "6", "7", "8"):
        del prompt[node]
    prompt["9"] = {"class_type": "DistillTestTinyVAE", "inputs": {"seed": 0}}
    prompt["10"] = {"class_type": "DistillTestShapedImage", "inputs": {"shape": shape}}
    prompt["11"] = {"class_type": "DistillOptimizeImage", "inputs": {
        "vae": ["9", 0], "loss": ["4", 0], "start": "image", "width": 64, "height": 64, "steps": 1,
        "learning_rate": 0.02, "lr_end": 0.005, "seed": 0, "l2_to_init": 0.0, "whole_image_steps": 1, "patches": 1,
        "native_size": 64, "image": ["10", 0]} | inputs}
    prompt["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}
    return prompt


def editing(loss: str = "DistillDDSLoss", reference=None, **inputs) -> dict:
    """An editing loss (DDS or PDS) on the tiny model: the empty latent as reference and start, a third
    conditioning as the source prompt."""
    prompt = optimize_latent()
    prompt["9"] = {"class_type": "DistillTestConditioning", "inputs": {"seed": 3}}
    prompt["4"] = {"class_type": loss, "inputs": {
        "model": ["1", 0], "reference": ["5", 0], "source": ["9", 0], "target": ["2", 0], "negative": ["3", 0],
        "cfg": 7.5, "weighting": "auto", "t_min": 0.05, "t_max": 0.95, "t_schedule": "uniform",
        "grad_clip": 0.0} | inputs}
    if reference is not None:
        prompt["4"]["inputs"]["reference"] = ["13", 0]
        prompt["13"] = {"class_type": "DistillTestShapedLatent", "inputs": {"shape": reference}}
    return prompt


def pds(**inputs) -> dict:
    return editing("DistillPDSLoss", **{"cfg": 100.0, "t_min": 0.02, "t_max": 0.98} | inputs)


def optimize_3d(loss_prompt: dict | None = None, vae: str = "autoencoder_kl", **inputs) -> dict:
    """Optimize 3D at tiny settings on the loss node "4" of loss_prompt (default: SDS), its turntable previewed."""
    prompt = loss_prompt or sds(cfg=7.5)
    for node in ("6", "7", "8") if loss_prompt else ("5", "6", "7", "8"):
        del prompt[node]
    prompt["30"] = {"class_type": "DistillTestTinyVAE", "inputs": {"seed": 0, "kind": vae}}
    prompt["31"] = {"class_type": "DistillOptimize3D", "inputs": {
        "vae": ["30", 0], "loss": ["4", 0], "steps": 1, "learning_rate": 0.05, "render_size": 16, "grid": 8,
        "samples_per_ray": 8, "cameras_per_step": 1, "native_size": 64, "seed": 0, "elevation_min": -10.0,
        "elevation_max": 45.0, "distance_min": 1.5, "distance_max": 2.0, "fovy_min": 40.0, "fovy_max": 70.0,
        "turntable_frames": 2, "turntable_size": 16, "turntable_elevation": 15.0} | inputs}
    prompt["32"] = {"class_type": "PreviewImage", "inputs": {"images": ["31", 1]}}
    return prompt


def mask_node(value=None, shape: str | None = None) -> dict:
    """A MASK: Solid Mask of `value` at 64×64, or the red channel of a test image of `shape` [B, H, W, C]."""
    if shape is None:
        return {"14": {"class_type": "SolidMask", "inputs": {"value": value, "width": 64, "height": 64}}}
    return {"14": {"class_type": "ImageToMask", "inputs": {"image": ["15", 0], "channel": "red"}},
            "15": {"class_type": "DistillTestShapedImage", "inputs": {"shape": shape}}}


def masked_image(value=None, shape: str | None = None) -> dict:
    """Optimize Image with its optional mask connected."""
    return optimize_image(mask=["14", 0]) | mask_node(value, shape)


def masked_latent(value=None, shape: str | None = None) -> dict:
    """Optimize Latent starting from a latent with a noise_mask (Set Latent Noise Mask)."""
    prompt = optimize_latent(latent=["16", 0]) | mask_node(value, shape)
    prompt["16"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["5", 0], "mask": ["14", 0]}}
    return prompt


def without(prompt: dict, node: str, name: str) -> dict:
    prompt = json.loads(json.dumps(prompt))
    del prompt[node]["inputs"][name]
    return prompt


def linked(prompt: dict, node: str, name: str, value, primitive: str = "PrimitiveFloat") -> dict:
    """The widget `name` of `node` fed by a primitive node instead of a constant (ComfyUI checks no range then)."""
    prompt = with_inputs(prompt, node, **{name: ["20", 0]})
    prompt["20"] = {"class_type": primitive, "inputs": {"value": value}}
    return prompt


NAN, INF = "nan", "inf"  # as a client sends them: ComfyUI turns them into floats with float()
OUTSIDE = "{outside}"  # replaced by the watched folder outside the base directory
CASES = [
    # SDS Loss
    Case("sds-cfg-1e9", sds(cfg=1e9), "cfg", "bigger than max of 200.0", "prompt"),
    Case("sds-cfg-negative", sds(cfg=-5.0), "cfg", "smaller than min of 1.0", "prompt"),
    Case("sds-cfg-nan", sds(cfg=NAN), "cfg", "cfg: nan is not a finite number; set a number from 1.0 to 200.0", "run"),
    Case("sds-cfg-linked-1e9", linked(sds(), "4", "cfg", 1e9), "cfg", "cfg: 1000000000.0 is outside its range", "run"),
    Case("sds-weighting-bogus", sds(weighting="bogus"), "weighting",
         "weighting: 'bogus' is not one of its options", "run"),
    Case("sds-t-schedule-bogus", sds(t_schedule="bogus"), "t_schedule", "t_schedule: 'bogus' is not one of", "run"),
    Case("sds-t-reversed", sds(t_min=0.9, t_max=0.1), "t_min", r"t_min \(0.9\) must be below t_max \(0.1\)", "prompt"),
    Case("sds-t-min-nan", sds(t_min=NAN), "t_min", "t_min: nan is not a finite number", "prompt"),
    Case("sds-t-max-2", sds(t_max=2.0), "t_max",
         "t_max: 2.0 is outside its range; set a number from 0.0 to 1.0", "prompt"),
    Case("sds-grad-clip-negative", sds(grad_clip=-1.0), "grad_clip", "smaller than min of 0.0", "prompt"),
    Case("sds-grad-clip-linked-nan", linked(sds(), "4", "grad_clip", NAN), "grad_clip",
         "grad_clip: nan is not a finite", "run"),
    Case("sds-cfg-inf", sds(cfg=INF), "cfg", "bigger than max of 200.0", "prompt"),
    # NFSD Guidance
    Case("nfsd-threshold-5", nfsd(threshold=5.0), "threshold", "bigger than max of 1.0", "prompt"),
    Case("nfsd-threshold-negative", nfsd(threshold=-1.0), "threshold", "smaller than min of 0.0", "prompt"),
    Case("nfsd-threshold-nan", nfsd(threshold=NAN), "threshold", "threshold: nan is not a finite number", "run"),
    Case("nfsd-cfg-nan", nfsd(cfg=NAN), "cfg", "cfg: nan is not a finite number", "run"),
    Case("nfsd-negative-missing", without(nfsd(), "4", "nfsd_negative"), "nfsd_negative", "Required input is missing",
         "prompt"),
    Case("nfsd-weighting-bogus", nfsd(weighting="bogus"), "weighting", "weighting: 'bogus' is not one of", "run"),
    # DDIM-Invert Noise
    Case("ddim-inversion-cfg-nan", ddim(inversion_cfg=NAN), "inversion_cfg",
         "inversion_cfg: nan is not a finite", "run"),
    Case("ddim-inversion-cfg-1e9", ddim(inversion_cfg=1e9), "inversion_cfg", "bigger than max of 30.0", "prompt"),
    Case("ddim-eta-nan", ddim(eta=NAN), "eta", "eta: nan is not a finite number", "run"),
    Case("ddim-eta-negative", ddim(eta=-1.0), "eta", "smaller than min of 0.0", "prompt"),
    Case("ddim-eta-placement-bogus", ddim(eta_placement="bogus"), "eta_placement",
         "eta_placement: 'bogus' is not", "run"),
    Case("ddim-variant-bogus", ddim(variant="bogus"), "variant", "variant: 'bogus' is not one of", "run"),
    Case("ddim-steps-0", ddim(inversion_steps=0), "inversion_steps", "smaller than min of 1", "prompt"),
    Case("ddim-refresh-0", linked(ddim(), "9", "refresh_every", 0, "PrimitiveInt"), "refresh_every",
         "refresh_every: 0 is outside its range", "run"),
    # LMC Corrector
    Case("lmc-name-traversal", lmc(corrector_name="../../../outside0/corrector.safetensors"), "corrector_name",
         "a corrector is named by its file name alone", "prompt"),
    Case("lmc-name-absolute", lmc(corrector_name=f"{OUTSIDE}/corrector.safetensors"), "corrector_name",
         "a corrector is named by its file name alone", "prompt"),
    Case("lmc-name-missing", lmc(corrector_name="missing.safetensors"), "corrector_name",
         "'missing.safetensors' is not one of its options", "prompt"),
    Case("lmc-pickle", lmc(corrector_name="distill_evil.ckpt"), "corrector_name", "'distill_evil.ckpt' is not one of",
         "prompt"),
    Case("lmc-metadata-not-json", lmc(corrector_name="distill_not_json.safetensors"), "corrector_name",
         "corrector_name: distill_not_json.safetensors: architecture: not JSON", "run"),
    Case("lmc-t-centers-descending", lmc(corrector_name="distill_descending.safetensors"), "corrector_name",
         "corrector_name: distill_descending.safetensors: t_centers: not strictly ascending", "run"),
    Case("lmc-huge-claim", lmc(corrector_name="distill_huge.safetensors"), "corrector_name",
         "corrector_name: distill_huge.safetensors: tensors: a unet corrector has a 4-D tensor", "run"),
    # Train LMC Corrector
    Case("train-folder-absolute", train(folder=f"{OUTSIDE}/images"), "folder", "is not a subfolder name", "run"),
    Case("train-folder-absolute-missing", train(folder=f"{OUTSIDE}/missing"), "folder",
         "is not a subfolder name", "run"),
    Case("train-folder-dotdot", train(folder="../../outside0/images"), "folder", "is not a subfolder name", "run"),
    Case("train-folder-link-out", train(folder="distill_link"), "folder",
         "there is no folder 'distill_link' in ComfyUI's input directory", "run"),
    Case("train-folder-missing", train(folder="distill_missing"), "folder",
         "there is no folder 'distill_missing' in ComfyUI's input directory", "run"),
    Case("train-folder-image-link-out", train(folder="distill_linked_images"), "folder",
         "distill_linked_images/a.png links outside ComfyUI's input directory", "run"),
    Case("train-filename-traversal", train(filename="../../outside0/x.safetensors"), "filename",
         "a corrector is named by its file name alone", "prompt"),
    Case("train-filename-suffix-only", train(filename=".safetensors"), "filename",
         "must be a name ending in", "prompt"),
    Case("train-filename-nul", train(filename="a\0b.safetensors"), "filename", "file name alone", "prompt"),
    Case("train-filename-300", train(filename="x" * 300 + ".safetensors"), "filename",
         "longer than 200 bytes", "prompt"),
    Case("train-filename-not-safetensors", train(filename="x.ckpt"), "filename", "must be a name ending in", "prompt"),
    Case("train-existing-without-overwrite", train(filename=GOOD), "filename",
         f"filename: {GOOD} already exists in models/lmc_correctors/; choose another name, or turn on overwrite",
         "run"),
    Case("train-kind-bogus", train(kind="bogus"), "kind", "kind: 'bogus' is not one of its options", "run"),
    Case("train-pairs-0", train(pairs_per_latent=0), "pairs_per_latent", "smaller than min of 1", "prompt"),
    Case("train-image-size-0", train(image_size=0), "image_size", "smaller than min of 64", "prompt"),
    Case("train-image-size-1e9", train(image_size=10**9), "image_size", "bigger than max of 4096", "prompt"),
    Case("train-steps-0", train(steps=0), "steps", "smaller than min of 1", "prompt"),
    Case("train-steps-linked-0", linked(train(kind="unet"), "4", "steps", 0, "PrimitiveInt"), "steps",
         "steps: 0 is outside its range", "run"),
    Case("train-images-1-channel", with_inputs(train(images=["5", 0]), "4") | {"5": {
        "class_type": "DistillTestShapedImage", "inputs": {"shape": "1,64,64,1"}}}, "images",
         r"images: it has 1 channel \(shape \[1, 64, 64, 1\]\)", "run"),
    # Optimize Latent
    Case("latent-lr-nan", optimize_latent(learning_rate=NAN), "learning_rate",
         "learning_rate: nan is not a finite", "run"),
    Case("latent-l2-nan", optimize_latent(l2_to_init=NAN), "l2_to_init", "l2_to_init: nan is not a finite", "run"),
    Case("latent-optimizer-bogus", optimize_latent(optimizer="bogus"), "optimizer", "optimizer: 'bogus' is not", "run"),
    Case("latent-lr-schedule-bogus", optimize_latent(lr_schedule="bogus"), "lr_schedule",
         "lr_schedule: 'bogus'", "run"),
    Case("latent-steps-0", optimize_latent(steps=0), "steps", "smaller than min of 1", "prompt"),
    Case("latent-3d", optimize_latent("4,16,16"), "latent",
         r"latent: its samples are a 3-D tensor of shape \[4, 16, 16\]", "run"),
    Case("latent-batch-0", optimize_latent("0,4,16,16"), "latent",
         r"latent: it is empty \(shape \[0, 4, 16, 16\]\)", "run"),
    Case("latent-5d", optimize_latent("1,4,2,16,16"), "latent", r"latent: its samples are a 5-D tensor", "run"),
    Case("latent-8-channels", optimize_latent("1,8,16,16"), "latent", r"latent: this latent has 8 channels", "run"),
    # Optimize Image
    Case("image-start-bogus", optimize_image(start="bogus"), "start",
         "start: 'bogus' is not one of its options", "run"),
    Case("image-lr-end-nan", optimize_image(lr_end=NAN), "lr_end", "lr_end: nan is not a finite number", "run"),
    Case("image-l2-nan", optimize_image(l2_to_init=NAN), "l2_to_init", "l2_to_init: nan is not a finite", "run"),
    Case("image-1-channel", optimize_image("1,64,64,1"), "image", r"image: it has 1 channel \(shape \[1, 64, 64, 1\]\)",
         "run"),
    Case("image-2-channels", optimize_image("1,64,64,2"), "image", r"image: it has 2 channels", "run"),
    Case("image-5d", optimize_image("1,2,64,64,3"), "image", r"image: it is a 5-D tensor of shape", "run"),
    Case("image-width-0", optimize_image(start="grey", width=0), "width", "smaller than min of 64", "prompt"),
    Case("image-native-size-huge", optimize_image(native_size=10**9), "native_size",
         "bigger than max of 4096", "prompt"),
    Case("image-mask-zero", masked_image(0.0), "mask", "mask: it is zero everywhere, so nothing would change", "run"),
    Case("image-mask-nan", masked_image(NAN), "mask", "mask: it contains NaN or infinite values", "run"),
    Case("image-mask-3-for-1-image", masked_image(shape="3,64,64,3"), "mask", "mask: it holds 3 masks for 1 image",
         "run"),
    # Optimize Latent's noise mask (Set Latent Noise Mask)
    Case("latent-noise-mask-zero", masked_latent(0.0), "latent",
         r"latent: its noise_mask, resized to the latent .* is zero everywhere", "run"),
    Case("latent-noise-mask-nan", masked_latent(NAN), "latent",
         r"latent: its noise_mask, resized to the latent .* contains NaN", "run"),
    Case("latent-noise-mask-3-for-1-latent", masked_latent(shape="3,64,64,3"), "latent",
         "latent: its noise_mask: it holds 3 masks for 1 image", "run"),
    # DDS Loss
    Case("dds-cfg-nan", editing(cfg=NAN), "cfg", "cfg: nan is not a finite number; set a number from 1.0 to 200.0",
         "run"),
    Case("dds-cfg-1e9", editing(cfg=1e9), "cfg", "bigger than max of 200.0", "prompt"),
    Case("dds-cfg-0", editing(cfg=0.0), "cfg", "smaller than min of 1.0", "prompt"),
    Case("dds-t-reversed", editing(t_min=0.9, t_max=0.1), "t_min", r"t_min \(0.9\) must be below t_max \(0.1\)",
         "prompt"),
    Case("dds-t-equal", editing(t_min=0.5, t_max=0.5), "t_min", r"t_min \(0.5\) must be below t_max \(0.5\)",
         "prompt"),
    Case("dds-weighting-bogus", editing(weighting="bogus"), "weighting", "weighting: 'bogus' is not one of", "run"),
    Case("dds-reference-8-channels", editing(reference="1,8,16,16"), "reference",
         r"reference: this latent has 8 channels \(shape \[1, 8, 16, 16\]\)", "run"),
    Case("dds-reference-3d", editing(reference="4,16,16"), "reference",
         r"reference: its samples are a 3-D tensor of shape \[4, 16, 16\]", "run"),
    Case("dds-source-missing", without(editing(), "4", "source"), "source", "Required input is missing", "prompt"),
    # CSD, ISM, SDS-Bridge and ASD Loss
    Case("csd-scale-nan", variant("DistillCSDLoss", scale=NAN), "scale", "scale: nan is not a finite number", "run"),
    Case("csd-ramp-2", variant("DistillCSDLoss", ramp=2.0), "ramp", "bigger than max of 1.0", "prompt"),
    Case("csd-late-t-max-below-t-min", variant("DistillCSDLoss", t_min=0.6, late_t_max=0.5), "late_t_max",
         r"late_t_max \(0.5\) must be above t_min \(0.6\)", "prompt"),
    Case("csd-negative-missing", without(variant("DistillCSDLoss"), "4", "csd_negative"), "csd_negative",
         "Required input is missing", "prompt"),
    Case("ism-delta-nan", variant("DistillISMLoss", delta_t=NAN), "delta_t", "delta_t: nan is not a finite", "run"),
    Case("ism-interval-0", variant("DistillISMLoss", inversion_interval=0.0), "inversion_interval",
         "smaller than min of 0.01", "prompt"),
    Case("ism-t-reversed", variant("DistillISMLoss", t_min=0.5, t_max=0.1), "t_min",
         r"t_min \(0.5\) must be below t_max \(0.1\)", "prompt"),
    Case("bridge-stage-two-linked-nan", linked(variant("DistillSDSBridgeLoss"), "4", "stage_two", NAN), "stage_two",
         "stage_two: nan is not a finite", "run"),
    Case("bridge-source-missing", without(variant("DistillSDSBridgeLoss"), "4", "bridge_source"), "bridge_source",
         "Required input is missing", "prompt"),
    Case("asd-shift-2", variant("DistillASDLoss", shift=2.0), "shift", "bigger than max of 1.0", "prompt"),
    Case("asd-cfg-nan", variant("DistillASDLoss", cfg=NAN), "cfg", "cfg: nan is not a finite number", "run"),
    # PDS Loss
    Case("pds-t-min-without-a-level-below", pds(t_min=0.001), "t_min",
         r"t_min \(0.001\) must be at least 0.002 for PDS", "prompt"),
    Case("pds-t-reversed", pds(t_min=0.9, t_max=0.1), "t_min", r"t_min \(0.9\) must be below t_max \(0.1\)",
         "prompt"),
    Case("pds-cfg-nan", pds(cfg=NAN), "cfg", "cfg: nan is not a finite number", "run"),
    Case("pds-grad-clip-linked-nan", linked(pds(), "4", "grad_clip", NAN), "grad_clip",
         "grad_clip: nan is not a finite", "run"),
    Case("pds-reference-8-channels", pds(reference="1,8,16,16"), "reference",
         r"reference: this latent has 8 channels", "run"),
    # Optimize 3D
    Case("3d-grid-linked-4", linked(optimize_3d(), "31", "grid", 4, "PrimitiveInt"), "grid",
         "grid: 4 is outside its range; set a whole number from 8 to 256", "run"),
    Case("3d-render-size-huge", optimize_3d(render_size=10**6), "render_size", "bigger than max of 512", "prompt"),
    Case("3d-elevation-inverted", optimize_3d(elevation_min=40.0, elevation_max=0.0), "elevation_min",
         r"elevation_min: 40.0 is above elevation_max \(0.0\)", "prompt"),
    Case("3d-dds-loss", optimize_3d(editing()), "loss", "loss: DDS and PDS edit a reference image", "run"),
    Case("3d-taesd", optimize_3d(vae="taesd"), "vae", "vae: TAESD cannot pass gradients", "run"),
    Case("3d-vae-16-channels", optimize_3d(vae="16_channels"), "vae",
         "vae: it encodes to 16-channel latents at 1/8 of the image's size, but the loss's model works on "
         "4-channel", "run"),
]


def fill(value, outside: Path):
    if isinstance(value, str):
        return value.replace(OUTSIDE, str(outside))
    if isinstance(value, dict):
        return {k: fill(v, outside) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, outside) for v in value]
    return value


def snapshot(folder: Path) -> dict:
    """Every file below folder with its size, modification time and content hash."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            out[str(path.relative_to(folder))] = (path.stat().st_size, path.stat().st_mtime_ns,
                                                  hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@dataclass
class World:
    server: object
    reference: torch.Tensor
    outside: dict
    correctors: dict


def valid_result(server) -> torch.Tensor:
    """The valid prompt run afresh (an unknown input changes ComfyUI's cache key, never the result)."""
    prompt = tiny_sds_prompt(steps=2)
    prompt["1"]["inputs"]["cache_buster"] = uuid.uuid4().hex
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = entry["outputs"]["7"]["latents"][0]
    return load_file(server.base / "output" / saved["subfolder"] / saved["filename"])["latent_tensor"]


def write_correctors(folder: Path, outside: Path) -> None:
    from distill.corrector import SpectralCorrector, UNetCorrector
    from distill.corrector_file import save_corrector

    def spectral(centers):
        return SpectralCorrector(torch.ones(4, 2, len(centers)), torch.tensor(centers))

    common = dict(model_family="SD15", model_type="EPS", latent_format="SD15", t_range=(0.02, 0.98), steps=0,
                  final_loss=0.0, images=0)
    save_corrector(folder / GOOD, spectral([0.2, 0.8]), **common)
    save_corrector(outside / "corrector.safetensors", spectral([0.2, 0.8]), **common)
    save_corrector(folder / "distill_descending.safetensors", spectral([0.8, 0.2]), **common)
    save_corrector(folder / "distill_not_json.safetensors", UNetCorrector(4, 1, 2), **common)
    tensors = load_file(folder / "distill_not_json.safetensors")
    from safetensors import safe_open

    with safe_open(str(folder / "distill_not_json.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    save_file(tensors, str(folder / "distill_not_json.safetensors"), metadata=metadata | {"architecture": "{oops"})
    save_file({"out.weight": torch.zeros(4, 1, 1, 1)}, str(folder / "distill_huge.safetensors"), metadata=metadata | {
        "architecture": json.dumps({"channels": 4, "levels": 6, "filters": 1024})})

    class Evil:
        def __reduce__(self):
            return (open, (str(outside / "unpickled"), "w"))

    (folder / "distill_evil.ckpt").write_bytes(pickle.dumps(Evil()))


@pytest.fixture(scope="module")
def world(live_server):
    from PIL import Image

    server, outside = live_server, live_server.outside
    folder = server.base / "models" / "lmc_correctors"
    folder.mkdir(parents=True, exist_ok=True)
    (outside / "images").mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(outside / "images" / "secret.png")
    write_correctors(folder, outside)
    inputs = server.base / "input"
    (inputs / "distill_link").symlink_to(outside / "images")
    (inputs / "distill_linked_images").mkdir()
    (inputs / "distill_linked_images" / "a.png").symlink_to(outside / "images" / "secret.png")

    through_link = str(inputs / "distill_link" / "secret.png")
    control = {"1": {"class_type": "DistillTestReadFile", "inputs": {"path": through_link}}}
    assert server.run_prompt(control)["status"]["status_str"] == "success"
    secret = os.path.realpath(outside / "images" / "secret.png")
    assert f"open {secret}" in server.watch_log.read_text()  # the watch sees a read through a link
    server.watch_log.write_text("")

    yield World(server, valid_result(server), snapshot(outside), snapshot(folder))
    for path in (inputs / "distill_link", inputs / "distill_linked_images" / "a.png"):
        path.unlink()
    (inputs / "distill_linked_images").rmdir()
    server.post("/history", {"clear": True})  # it keeps the NaN widget values, which the frontend cannot parse


def test_there_are_at_least_40_cases_across_every_pack_node():
    classes = {n["class_type"] for case in CASES for n in case.prompt.values()}
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert {"DistillSDSLoss", "DistillNFSDGuidance", "DistillDDIMInvertNoise", "DistillLMCCorrector",
            "DistillTrainLMCCorrector", "DistillOptimizeLatent", "DistillOptimizeImage", "DistillDDSLoss",
            "DistillPDSLoss", "SetLatentNoiseMask", "DistillCSDLoss", "DistillISMLoss", "DistillSDSBridgeLoss",
            "DistillASDLoss", "DistillOptimize3D"} <= classes


def error_of(server, prompt: dict, at: str) -> tuple[str, set[str]]:
    """The server's words about a refused or failed prompt, and the inputs it names."""
    r = server.post("/prompt", {"prompt": prompt})
    if at == "prompt":
        assert r.status_code == 400, r.text
        errors = [e for node in r.json()["node_errors"].values() for e in node["errors"]]
        return r.text, {e["extra_info"].get("input_name") for e in errors}
    assert r.ok, r.text
    entry = server.wait(r.json()["prompt_id"])
    assert entry["status"]["status_str"] == "error", entry["status"]
    error = next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert error["exception_type"].endswith(("ValueError", "CorrectorFileError")), error
    return error["exception_message"], {error["exception_message"].split(":")[0]}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_refused_naming_it_and_leaves_the_server_sound(case, world):
    server = world.server
    message, named = error_of(server, fill(case.prompt, server.outside), case.at)
    assert case.input in named and re.search(case.message, message), message
    assert torch.equal(valid_result(server), world.reference)
    assert server.watch_log.read_text() == ""
    assert snapshot(server.outside) == world.outside
    assert snapshot(server.base / "models" / "lmc_correctors") == world.correctors
