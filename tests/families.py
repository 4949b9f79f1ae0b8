"""Tiny random models of every family ComfyUI 0.3.64 loads, built from ComfyUI's own classes, for tests and benchmarks.

Recipes: ../shared/reference/families.md. Import after ``comfy_harness.load_comfyui()`` (ComfyUI must be importable).

Stable API (other branches import it; keep these names and meanings):

- ``FAMILIES``: the family names, in a fixed order: ``"sdxl"`` (EPS), ``"sdxl_edm"`` (EDM, Playground 2.5),
  ``"sdxl_vzsnr"`` (v-prediction, zero-SNR), ``"sd2_v"``, ``"sd3"``, ``"flux"``, ``"lumina2"``, ``"wan21"``
  (Wan 2.1 T2V, a video model) and ``"qwen_image"``.
- ``family_model(name, seed=0)``: a ``ModelPatcher`` on the CPU around the family's model class with random
  weights (every parameter and float buffer randn·0.05), float32. Cached per (name, seed): clone it before
  patching it.
- ``family_conditioning(name, seed, tokens=None)``: one CONDITIONING ``[[cond, extras]]`` with what the family's
  ``extra_conds`` reads (SDXL's pooled output and sizes, Flux's guidance 3.5 as FluxGuidance sets it, Lumina2's
  attention mask). ``tokens`` overrides the prompt length (Lumina2's prompts differ in length: 7, 5, 4 by seed).
- ``family_latent(name, batch=1, seed=0)``: random samples [B, C, (T,) H, W] in the shape the family's VAE gives
  (Qwen-Image [B, 16, 1, 16, 16], Wan [B, 16, 2, 8, 8]; the 2-D families [B, C, 16, 16]).
- ``empty_latent(name, batch=1)``: the LATENT dict a user's usual empty-latent node gives for the family, made by
  that ComfyUI node (Empty Latent Image; EmptySD3LatentImage for SD3, Flux, Lumina2 and Qwen-Image, which is 4-D;
  EmptyHunyuanLatentVideo for Wan). KSampler passes it through ``comfy.sample.fix_empty_latent_channels``.
- ``family_vae(name, seed=0)``: a ``comfy.sd.VAE`` of the family's kind, tiny: an AutoencoderKL with 4 or 16
  latent channels, or for Wan and Qwen-Image the Wan 2.1 3-D VAE (causal, 8× spatial, 4× temporal) at width 8.
  Cached per (name, seed).
- ``Family`` / ``family(name)``: all of the above at once: model, positive (seed 1), negative (seed 2), latent
  (``family_latent``) and VAE.
"""
import functools
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

import torch

CPU = torch.device("cpu")
FAMILIES = ("sdxl", "sdxl_edm", "sdxl_vzsnr", "sd2_v", "sd3", "flux", "lumina2", "wan21", "qwen_image")
VIDEO_FAMILIES = ("wan21", "qwen_image")
"""Families whose latent format has a time axis (latent_dimensions 3)."""

_SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
    "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1], "transformer_depth_middle": 1,
    "use_linear_in_transformer": True, "context_dim": 64, "adm_in_channels": 32 + 6 * 256,
    "num_classes": "sequential", "use_temporal_attention": False, "use_temporal_resblock": False,
}
_SD2_UNET = {k: v for k, v in _SDXL_UNET.items() if k != "num_classes"} | {
    "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1], "adm_in_channels": None}
_SD3 = {
    "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "input_size": None, "adm_in_channels": 32,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 128}},
    "num_patches": 256, "pos_embed_max_size": 16, "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
}
_FLUX = {
    "image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "patch_size": 2,
    "vec_in_dim": 32, "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
    "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True,
}
_LUMINA2 = {
    "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "cap_feat_dim": 32, "n_layers": 1,
    "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 1, "multiple_of": 16, "qk_norm": True,
    "axes_dims": [8, 12, 12], "axes_lens": [300, 512, 512],
}
_WAN21 = {
    "image_model": "wan2.1", "model_type": "t2v", "dim": 64, "out_dim": 16, "num_heads": 2, "ffn_dim": 128,
    "num_layers": 1, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
    "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16, "text_dim": 32,
}
_QWEN_IMAGE = {
    "image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "num_layers": 1, "attention_head_dim": 32,
    "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32, "axes_dims_rope": (8, 12, 12),
}
_CONTEXT = {"sdxl": (7, 64), "sdxl_edm": (7, 64), "sdxl_vzsnr": (7, 64), "sd2_v": (7, 64), "sd3": (8, 32),
            "flux": (8, 32), "lumina2": (7, 32), "wan21": (8, 32), "qwen_image": (7, 32)}
_LUMINA2_TOKENS = (7, 5, 4)
_LATENT = {"sdxl": (4, 16, 16), "sdxl_edm": (4, 16, 16), "sdxl_vzsnr": (4, 16, 16), "sd2_v": (4, 16, 16),
           "sd3": (16, 16, 16), "flux": (16, 16, 16), "lumina2": (16, 16, 16), "wan21": (16, 2, 8, 8),
           "qwen_image": (16, 1, 16, 16)}


def _check(name: str) -> None:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; one of {', '.join(FAMILIES)}")


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter and float buffer randn·0.05 (ComfyUI's ops leave weights as torch.empty)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            t.copy_(torch.randn(t.shape, generator=g) * 0.05)


def _model(name: str):
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models as sm

    ModelType = comfy.model_base.ModelType
    if name.startswith("sdxl") or name == "sd2_v":
        cls, unet = (sm.SDXL, _SDXL_UNET) if name.startswith("sdxl") else (sm.SD20, _SD2_UNET)
        config = cls(dict(unet))
        config.unet_config |= {"num_heads": -1, "num_head_channels": 16}
        config.set_inference_dtype(torch.float32, None)
        model_type = ModelType.V_PREDICTION
        if name == "sdxl":
            model_type = ModelType.EPS
        elif name == "sdxl_edm":
            config.latent_format = comfy.latent_formats.SDXL_Playground_2_5()
            config.sampling_settings = dict(config.sampling_settings, sigma_data=0.5, sigma_max=80.0, sigma_min=0.002)
            model_type = ModelType.EDM
        elif name == "sdxl_vzsnr":
            config.sampling_settings = dict(config.sampling_settings, zsnr=True)
        base = comfy.model_base.SDXL if name.startswith("sdxl") else comfy.model_base.BaseModel
        return base(config, model_type=model_type, device=CPU)
    cls, unet = {"sd3": (sm.SD3, _SD3), "flux": (sm.Flux, _FLUX), "lumina2": (sm.Lumina2, _LUMINA2),
                 "wan21": (sm.WAN21_T2V, _WAN21), "qwen_image": (sm.QwenImage, _QWEN_IMAGE)}[name]
    config = cls(dict(unet))
    config.set_inference_dtype(torch.float32, None)
    return config.get_model({}, device=CPU)


@functools.cache
def family_model(name: str, seed: int = 0):
    """A ModelPatcher (CPU, float32) around a random tiny model of the family; shared: clone before patching."""
    import comfy.model_patcher

    _check(name)
    model = _model(name)
    _randomize(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def family_conditioning(name: str, seed: int, tokens: int | None = None) -> list:
    """One CONDITIONING for the family: [[cond [1, T, D], extras]] with what its extra_conds reads."""
    _check(name)
    t, d = _CONTEXT[name]
    if name == "lumina2":
        t = _LUMINA2_TOKENS[seed % len(_LUMINA2_TOKENS)]
    t = tokens or t
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, t, d, generator=g)
    extras = {}
    if name.startswith("sdxl"):
        size = 8 * _LATENT[name][-1]
        extras = {"pooled_output": torch.randn(1, 32, generator=g), "width": size, "height": size, "crop_w": 0,
                  "crop_h": 0, "target_width": size, "target_height": size}
    elif name == "sd3":
        extras = {"pooled_output": torch.randn(1, 32, generator=g)}
    elif name == "flux":
        extras = {"pooled_output": torch.randn(1, 32, generator=g), "guidance": 3.5}
    elif name == "lumina2":
        extras = {"attention_mask": torch.ones(1, t, dtype=torch.long)}
    return [[cond, extras]]


def family_latent(name: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Random samples [B, C, (T,) H, W] in the shape the family's own VAE gives."""
    _check(name)
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch,) + _LATENT[name], generator=g)


def empty_latent(name: str, batch: int = 1) -> dict:
    """The LATENT the family's usual empty-latent node gives, from that ComfyUI node (Qwen-Image's is 4-D)."""
    import nodes
    from comfy_extras.nodes_hunyuan import EmptyHunyuanLatentVideo
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage

    _check(name)
    pixels = 8 * _LATENT[name][-1]
    if name == "wan21":
        frames = 4 * (_LATENT[name][1] - 1) + 1
        return EmptyHunyuanLatentVideo().generate(pixels, pixels, frames, batch)[0]
    if _LATENT[name][0] == 16:
        return EmptySD3LatentImage.execute(width=pixels, height=pixels, batch_size=batch)[0]
    return nodes.EmptyLatentImage().generate(pixels, pixels, batch)[0]


@contextmanager
def _tiny_wan_vae():
    """comfy.sd.VAE builds its Wan 2.1 VAE at width 96 (127 M parameters); build it at width 8 instead."""
    import comfy.ldm.wan.vae

    full = comfy.ldm.wan.vae.WanVAE
    with mock.patch.object(comfy.ldm.wan.vae, "WanVAE",
                           lambda **config: full(**(config | {"dim": 8, "num_res_blocks": 1}))):
        yield full


@functools.cache
def family_vae(name: str, seed: int = 0):
    """A tiny comfy.sd.VAE of the family's kind: AutoencoderKL (4 or 16 channels) or the Wan 2.1 3-D VAE."""
    import comfy.sd

    from comfy_harness import tiny_vae

    _check(name)
    if name not in VIDEO_FAMILIES:
        return tiny_vae(seed=seed, channels=_LATENT[name][0])
    with _tiny_wan_vae() as full:
        shapes = full(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                      temperal_downsample=[False, True, True], dropout=0.0)
        _randomize(shapes, seed)
        return comfy.sd.VAE(sd=shapes.state_dict())


@dataclass(frozen=True)
class Family:
    name: str
    model: object
    positive: list
    negative: list
    latent: torch.Tensor
    vae: object

    @property
    def video(self) -> bool:
        return self.name in VIDEO_FAMILIES


def family(name: str, batch: int = 1) -> Family:
    """The family's tiny model, positive (seed 1) and negative (seed 2) conditioning, latent and VAE."""
    return Family(name, family_model(name), family_conditioning(name, 1), family_conditioning(name, 2),
                  family_latent(name, batch), family_vae(name))
