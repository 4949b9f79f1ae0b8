"""Optimize Image per-iteration time against Optimize Latent with the same SDS loss, side by side.

Same SD1.5-shaped UNet as step_cost.py; an SD-shaped AutoencoderKL (ch 128, 1-2-4-4, 2 res blocks,
random weights). The latent run optimizes a 1x4x32x32 latent; the image run a 512x512 image at
native size 256 (latent 32x32 too): its whole-image phase (one resized view) and its patch phase
(2 patches of 256 per step) are timed separately.

    python benchmarks/image_step.py [--channels 64] [--steps 6]
"""
import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from step_cost import optimize_run, sds_loss, setup, step_times  # noqa: E402


def sd_vae():
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * 0.02 for k, v in AutoencoderKL(ddconfig=ddconfig, embed_dim=4).state_dict().items()}
    return comfy.sd.VAE(sd=sd, config={"params": {"ddconfig": ddconfig, "embed_dim": 4}})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    args.latent = 32
    model, (pos, neg, _) = setup(args)
    loss, vae = sds_loss(model, pos, neg), sd_vae()
    image = torch.rand(1, 512, 512, 3, generator=torch.Generator().manual_seed(1))
    common = dict(vae=vae, loss=loss, start="image", width=512, height=512, learning_rate=0.05, lr_end=0.01, seed=0,
                  l2_to_init=0.0, patches=2, native_size=256, image=image)
    times = {"latent": [], "image, whole": [], "image, patches": []}
    for _ in range(2):
        times["latent"] += optimize_run(loss, torch.zeros(1, 4, 32, 32), args.steps + 1)
        times["image, whole"] += step_times("DistillOptimizeImage", steps=args.steps + 1,
                                            whole_image_steps=args.steps + 1, **common)
        times["image, patches"] += step_times("DistillOptimizeImage", steps=args.steps + 1, whole_image_steps=0,
                                              **common)
    t = {k: statistics.median(v) for k, v in times.items()}
    vae_params = sum(p.numel() for p in vae.first_stage_model.encoder.parameters())
    print(f"UNet {args.channels} channels; VAE encoder {vae_params / 1e6:.1f}M parameters; device {args.device}")
    print("median per-iteration ms: " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in t.items()))
    print(f"time   Optimize Image (whole-image phase) / Optimize Latent: {t['image, whole'] / t['latent']:.3f}")
    print(f"time   Optimize Image (patch phase, 2 patches) / Optimize Latent: {t['image, patches'] / t['latent']:.3f}")


if __name__ == "__main__":
    main()
