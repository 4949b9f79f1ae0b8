"""Per-step cost of Optimize 3D: render + VAE encode (forward and backward) against the loss's UNet forward at the
same native size, and the whole node step, side by side in one run; peak memory of each in a fresh process.

Same SD1.5-shaped UNet as step_cost.py and SD-shaped AutoencoderKL as image_step.py (random weights: the cost is
the same). One camera per step, the renders resized to --native (the model's native size) before the VAE, as the
node does; the UNet sees the cond + uncond batch of that latent. The goal on a GPU: render + encode ≤ 30% of a step
at 64² renders (--native 512).

    python benchmarks/scene_step.py [--channels 64] [--native 128] [--render 64] [--grid 32] [--samples 64]
                                    [--steps 5] [--device cpu|cuda]
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from image_step import sd_vae  # noqa: E402
from step_cost import bare_forward, harness, sds_loss, setup, step_times  # noqa: E402

PHASES = ("render", "render + encode", "UNet forward", "Optimize 3D step")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Pieces:
    """The pieces of one Optimize 3D step, built as the node builds them."""

    def __init__(self, args, model, vae):
        distill, nodes = harness.pack("distill.optimize_scene"), harness.pack("nodes.vae_gradients")
        self.scene_module, self.render_module = harness.pack("distill.scene"), harness.pack("distill.render")
        self.cameras = harness.pack("distill.cameras").CameraRanges()
        self.args, self.model, self.device = args, model, model.load_device
        self.encoder = nodes.differentiable_encoder(vae, model)
        patcher, encode = self.encoder.__enter__()
        import comfy.model_management

        comfy.model_management.load_models_gpu([model, patcher])
        self.view = distill.SceneView(args.native, encode)
        self.generator = torch.Generator().manual_seed(0)
        with torch.inference_mode(False):
            self.scene = self.scene_module.VoxelScene(args.grid, self.generator, self.device)

    def render(self, encode: bool) -> None:
        with torch.inference_mode(False), torch.enable_grad():
            rays = self.cameras.sample(1, self.generator).to(self.device).rays(self.args.render, self.args.render)
            background = torch.ones(3, device=self.device)
            out = self.render_module.render(self.scene, rays, self.args.samples, background, generator=self.generator)
            z = self.view(out.rgb) if encode else out.rgb
            (z * torch.randn_like(z)).sum().backward()
        synchronize(self.device)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def node_inputs(args, vae, loss) -> dict:
    return dict(vae=vae, loss=loss, learning_rate=0.05, render_size=args.render, grid=args.grid,
                samples_per_ray=args.samples, cameras_per_step=1, native_size=args.native, seed=0,
                elevation_min=-10.0, elevation_max=45.0, distance_min=1.5, distance_max=2.0, fovy_min=40.0,
                fovy_max=70.0, turntable_frames=1, turntable_size=16, turntable_elevation=15.0)


def peak_memory(args, phase: str) -> float:
    """Peak extra memory (MiB) of one phase, measured in a fresh process."""
    argv = [sys.executable, __file__, "--channels", str(args.channels), "--native", str(args.native), "--render",
            str(args.render), "--grid", str(args.grid), "--samples", str(args.samples), "--device", args.device,
            "--memory-of", phase]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


def measure_memory_in_this_process(args) -> None:
    import psutil

    args.latent = args.native // 8
    model, (pos, neg, _) = setup(args)
    vae = sd_vae()
    pieces = Pieces(args, model, vae) if args.memory_of.startswith("render") else None
    if args.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = psutil.Process().memory_info().rss
    if pieces is not None:
        pieces.render(encode=args.memory_of == "render + encode")
    elif args.memory_of == "UNet forward":
        bare_forward(model, [pos, neg], torch.zeros(1, 4, args.latent, args.latent))
    else:
        harness.run_node("DistillOptimize3D", steps=2, **node_inputs(args, vae, sds_loss(model, pos, neg)))
    peak = (torch.cuda.max_memory_allocated() if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"mib": (peak - base) / 2**20}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--native", type=int, default=128)
    p.add_argument("--render", type=int, default=64)
    p.add_argument("--grid", type=int, default=32)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory-of", choices=PHASES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_of:
        return measure_memory_in_this_process(args)
    args.latent = args.native // 8
    model, (pos, neg, _) = setup(args)
    vae = sd_vae()
    pieces = Pieces(args, model, vae)
    latent = torch.zeros(1, 4, args.latent, args.latent)
    loss = sds_loss(model, pos, neg)
    times = {k: [] for k in PHASES}
    for _ in range(2):  # interleaved, so drift in machine load hits every row alike
        times["render"] += timed(lambda: pieces.render(encode=False), args.steps)
        times["render + encode"] += timed(lambda: pieces.render(encode=True), args.steps)
        times["UNet forward"] += timed(lambda: bare_forward(model, [pos, neg], latent), args.steps)
        times["Optimize 3D step"] += step_times("DistillOptimize3D", steps=args.steps + 1,
                                                **node_inputs(args, vae, loss))
    t = {k: statistics.median(v) for k, v in times.items()}
    memory = {k: peak_memory(args, k) for k in PHASES}
    params = sum(q.numel() for q in model.model.diffusion_model.parameters())
    encoder = sum(q.numel() for q in vae.first_stage_model.encoder.parameters())
    print(f"UNet {args.channels} channels ({params / 1e6:.1f}M), VAE encoder {encoder / 1e6:.1f}M; renders "
          f"{args.render}² with {args.samples} samples per ray on a {args.grid}³ grid, resized to {args.native}² "
          f"(latent {args.latent}²); device {args.device}; torch {torch.__version__}")
    print("| phase (median per step) | ms | share of the Optimize 3D step | peak memory MiB |")
    print("| --- | --- | --- | --- |")
    for k in PHASES:
        print(f"| {k} | {t[k] * 1e3:.1f} | {t[k] / t['Optimize 3D step']:.3f} | {memory[k]:.1f} |")
    print(f"time   render + encode / UNet forward (cond + uncond): {t['render + encode'] / t['UNet forward']:.3f}")


if __name__ == "__main__":
    main()
