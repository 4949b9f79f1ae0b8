"""Per-iteration cost of Optimize Latent with each loss, against bare batched forwards of the same model.

Rows: SDS step / bare cond+uncond forward (time and peak memory); NFSD step / bare 3-branch forward
and NFSD / SDS; SDI (DDIM-Invert Noise, t annealed 0.98 → 0.2) / SDS at refresh_every 1 and 10;
LMC-SDS / SDS with a U-Net and with a spectral corrector (random weights: the cost is the same); CSD, ISM, SDS-Bridge
and ASD / SDS at their defaults, with the network calls and branch evaluations of a step counted at the UNet (ISM's
inversion calls included; over a run of 2·steps, so both stages of CSD and SDS-Bridge count); and the pack's SDS
step through ComfyUI / a threestudio-style SDS step written directly on diffusers with the same weights (the
acceptance bound is 1.05). The model is SD1.5-shaped (4 levels, channel_mult 1-2-4-4, 2 res blocks, attention on
the first three levels, context 768) but narrow enough for a CPU; ComfyUI is told to use PyTorch's attention (its
default on CUDA) so that both sides run the same attention kernel. Both are timed side by side in this one run; peak
memory is measured in a fresh child process per phase. Needs ComfyUI, found as the tests find it.

Then a row per model family (tests/families.py: tiny random SDXL EPS/EDM/v-zsnr, SD2-v, SD3, Flux, Lumina2, Wan 2.1,
Qwen-Image from ComfyUI's own classes): the pack's SDS step (Optimize Latent, cfg 7.5) / KSampler's euler step
(cfg 7.5, normal schedule) on the same model, latent and prompts, both with the same Latent2RGB previews, in
alternating runs; the median of the per-run ratios. On models this small the network costs little, so the
ratio is the pack's host overhead per step; beside it, the PyTorch operator calls per step of each side counted at
the dispatcher (the host's work, the same on every machine). --families-only prints just these rows.

    python benchmarks/step_cost.py [--channels 64] [--latent 32] [--steps 10] [--pairs 8] [--device cpu|cuda]
                                   [--families-only] [--family-pairs 6] [--threads N]
"""
import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
import comfy_harness as harness  # noqa: E402
from diffusers import DDIMScheduler  # noqa: E402
from reference_diffusers import SD_SCHEDULER, diffusers_unet  # noqa: E402


def unet_config(channels: int) -> dict:
    return harness.UNET | {
        "model_channels": channels, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "context_dim": 768, "num_heads": 8,
    }


def start_comfyui(args):
    sys.path.insert(0, str(harness.COMFYUI))
    import comfy.cli_args

    comfy.cli_args.args.use_pytorch_cross_attention = True
    harness.load_comfyui(cpu=args.device == "cpu")


def setup(args):
    start_comfyui(args)
    import comfy.model_management

    model = harness.tiny_model("eps", 0, unet_config(args.channels))
    if args.device != "cpu":
        model.load_device = torch.device(args.device)
    comfy.model_management.load_models_gpu([model])
    return model, [harness.conditioning(seed, 77, 768) for seed in (1, 2, 3)]


def bare_forward(model, conds, latent):
    """One forward of the network on one batch holding every branch, nothing else."""
    device = model.load_device
    x = torch.randn(len(conds), *latent.shape[1:], device=device)
    sigma = torch.full((len(conds),), 3.0, device=device)
    ctx = torch.cat([c[0][0] for c in conds]).to(device)
    with torch.inference_mode():
        model.model.apply_model(x, sigma, c_crossattn=ctx)
    if device.type == "cuda":
        torch.cuda.synchronize()


COMMON = dict(weighting="sds", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0)


def sds_loss(model, pos, neg):
    return harness.run_node("DistillSDSLoss", model=model, positive=pos, negative=neg, cfg=100.0, **COMMON).args[0]


def nfsd_loss(model, pos, neg, nfsd_neg):
    return harness.run_node("DistillNFSDGuidance", model=model, positive=pos, negative=neg, nfsd_negative=nfsd_neg,
                            cfg=7.5, threshold=0.2, **COMMON).args[0]


def sdi_loss(model, pos, neg, refresh_every):
    noise = harness.run_node("DistillDDIMInvertNoise", inversion_steps=10, inversion_cfg=-7.5, eta=0.3,
                             eta_placement="end", tau_jitter=True, variant="renoise",
                             refresh_every=refresh_every).args[0]
    args = COMMON | {"t_min": 0.2, "t_schedule": "linear_anneal"}
    return harness.run_node("DistillSDSLoss", model=model, positive=pos, negative=neg, cfg=7.5, noise=noise,
                            **args).args[0]


def lmc_loss(model, pos, neg, kind):
    corrector_mod, correctors = harness.pack("distill.corrector"), harness.pack("nodes.correctors")
    if kind == "unet":
        module = corrector_mod.UNetCorrector(4)
    else:
        module = corrector_mod.SpectralCorrector(torch.rand(4, 32, 49), torch.linspace(0.03, 0.97, 49))
    corrector = correctors.LoadedCorrector(kind, module, correctors.what_it_models(model))
    return harness.run_node("DistillSDSLoss", model=model, positive=pos, negative=neg, cfg=8.0, corrector=corrector,
                            **COMMON).args[0]


def variant_losses(model, pos, neg, extra) -> dict:
    """CSD, ISM, SDS-Bridge and ASD at their nodes' defaults (t ranges included: ISM's t ≤ 0.5)."""
    nodes = {"csd": ("DistillCSDLoss", dict(csd_negative=extra, scale=1.0, ramp=0.5, late_t_max=0.5)),
             "ism": ("DistillISMLoss", dict(cfg=7.5, delta_t=0.08, inversion_interval=0.2, t_max=0.5)),
             "sds-bridge": ("DistillSDSBridgeLoss", dict(bridge_target=pos, bridge_source=extra, cfg=40.0,
                                                        stage_two=0.5)),
             "asd": ("DistillASDLoss", dict(cfg=7.5, shift=0.1))}
    return {name: harness.run_node(node, model=model, positive=pos, negative=neg,
                                   **(COMMON | {"weighting": "auto"} | inputs)).args[0]
            for name, (node, inputs) in nodes.items()}


def forwards_per_step(model, loss, latent, steps: int) -> tuple[float, float]:
    """(network calls, latent evaluations) per step of Optimize Latent with the loss, counted at the UNet: a call is
    one batched forward, an evaluation one branch at one latent (a call's batch over the latent's)."""
    calls, rows = [], []

    def count(module, args):
        calls.append(1)
        rows.append(len(args[0]) / len(latent))

    hook = model.model.diffusion_model.register_forward_pre_hook(count)
    try:
        optimize_run(loss, latent, steps)
    finally:
        hook.remove()
    return len(calls) / steps, sum(rows) / steps


def diffusers_sds_run(unet, conds, latent, steps: int, guidance_scale: float = 99.0) -> list[float]:
    """threestudio's SDS loop written directly on diffusers: per step t ~ U{20, …, 980}, ε ~ N(0, I),
    x_t = add_noise, one UNet forward on [cond, uncond], ε̂_c + s·(ε̂_c − ε̂_u) (s = 99 is cfg 100 here),
    g = (1 − ᾱ_t)·(ε̂ − ε), the target loss, AdamW (lr 0.1 cosine, betas 0.9/0.99, eps 1e-15). Returns the wall
    time of every step after the first."""
    device = next(unet.parameters()).device
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    alphas = scheduler.alphas_cumprod.to(device)
    context = torch.cat([c[0][0] for c in conds]).to(device)
    x = latent.clone().to(device).requires_grad_(True)
    opt = torch.optim.AdamW([x], lr=0.1, betas=(0.9, 0.99), eps=1e-15)
    stamps = []
    for step in range(steps):
        opt.param_groups[0]["lr"] = 0.05 * (1 + math.cos(math.pi * step / max(steps - 1, 1)))
        t = torch.randint(20, 981, (len(x),), device=device)
        with torch.no_grad():
            eps = torch.randn_like(x)
            x_t = scheduler.add_noise(x.detach(), eps, t)
            out = unet(torch.cat([x_t] * 2), torch.cat([t] * 2),
                       encoder_hidden_states=context.repeat_interleave(len(x), 0)).sample
            cond, uncond = out.chunk(2)
            g = (1 - alphas[t]).view(-1, 1, 1, 1) * (cond + guidance_scale * (cond - uncond) - eps)
        loss = 0.5 * (x - (x - g).detach()).pow(2).sum() / len(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])]


def timed_steps(run, clock=time.perf_counter) -> list[float]:
    """Call run(), which reports progress every step; returns the time of every step after the first."""
    import comfy.utils

    stamps = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda *a, **k: stamps.append(clock()))
    try:
        run()
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def step_times(node_id: str, clock=time.perf_counter, **inputs) -> list[float]:
    """Run a node that reports progress every step; returns the time of every step after the first."""
    return timed_steps(lambda: harness.run_node(node_id, **inputs), clock)


def ksampler_run(model, pos, neg, latent, steps, cfg, clock=time.perf_counter) -> list[float]:
    """KSampler (euler, normal schedule, denoise 1) as ComfyUI runs it; time of every step after the first."""
    import nodes

    def run():
        with torch.inference_mode():
            nodes.common_ksampler(model, 0, steps, cfg, "euler", "normal", pos, neg, {"samples": latent})

    return timed_steps(run, clock)


def family_rows(args) -> list[tuple[str, str]]:
    """Per family: the pack's SDS step / KSampler's euler step, both at cfg 7.5, alternating runs. On the CPU the
    clock is the process's CPU time, which other processes on a shared machine disturb far less than wall time."""
    import families

    clock = time.process_time if args.device == "cpu" else time.perf_counter
    rows = []
    for name in families.FAMILIES:
        fam = families.family(name)
        model = fam.model.clone()
        if args.device != "cpu":
            model.load_device = torch.device(args.device)
        try:
            loss = harness.run_node("DistillSDSLoss", model=model, positive=fam.positive, negative=fam.negative,
                                    cfg=7.5, **COMMON).args[0]
            optimize_run(loss, fam.latent, 2)
        except ValueError as e:
            rows.append((name, f"refused: {str(e)[:100]}"))
            continue
        ksampler_run(model, fam.positive, fam.negative, fam.latent, 2, 7.5)
        sides = {"pack": [], "ksampler": []}
        for i in range(args.family_pairs):
            for side in ("pack", "ksampler") if i % 2 == 0 else ("ksampler", "pack"):
                run = (optimize_run(loss, fam.latent, args.steps + 1, clock) if side == "pack"
                       else ksampler_run(model, fam.positive, fam.negative, fam.latent, args.steps + 1, 7.5, clock))
                sides[side].append(statistics.median(run))
        ratios = [p / k for p, k in zip(sides["pack"], sides["ksampler"])]
        ms = {side: statistics.median(v) * 1e3 for side, v in sides.items()}
        ops = (ops_per_step(lambda n: optimize_run(loss, fam.latent, n)),
               ops_per_step(lambda n: ksampler_run(model, fam.positive, fam.negative, fam.latent, n, 7.5)))
        rows.append((name, f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}–{max(ratios):.3f}; "
                           f"ms {ms['pack']:.2f} / {ms['ksampler']:.2f}) | {ops[0]:.0f} / {ops[1]:.0f}"))
    return rows


def ops_per_step(run, steps: int = 5) -> float:
    """PyTorch operator calls per step of run(steps), counted at the dispatcher: the host's work, machine-independent
    (runs of 2·steps and steps differ by steps steps, so what a run does once cancels)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    run(steps)  # a first run does its one-time work (loading, the previewer) uncounted
    counts = []
    for n in (steps, 2 * steps):
        Count.calls = 0
        with Count():
            run(n)
        counts.append(Count.calls)
    return (counts[1] - counts[0]) / steps


def print_family_rows(args):
    rows = family_rows(args)
    clock = "CPU time (one thread)" if args.device == "cpu" else "wall time"
    print(f"SDS step / KSampler euler step, cfg 7.5, tiny family models, device {args.device}, {clock}, median of "
          f"{args.family_pairs} alternating run pairs of {args.steps} steps (per-run median step):")
    print("| family | SDS step / KSampler step | operator calls per step, SDS / KSampler |\n| --- | --- | --- |")
    for name, row in rows:
        print(f"| {name} | {row} |")


def optimize_run(loss, latent, steps, clock=time.perf_counter):
    """Optimize Latent for `steps`; returns the time of every step after the first."""
    return step_times("DistillOptimizeLatent", clock, latent={"samples": latent}, loss=loss, steps=steps,
                      learning_rate=0.1, optimizer="adamw", lr_schedule="cosine", seed=0, l2_to_init=0.0)


def peak_memory(args, phase: str) -> float:
    """Peak extra memory (MiB) of one phase, measured in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--channels", str(args.channels), "--latent", str(args.latent),
                          "--device", args.device, "--memory-of", phase], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["mib"]


def measure_memory_in_this_process(args):
    import psutil

    model, (pos, neg, _) = setup(args)
    latent = torch.zeros(1, 4, args.latent, args.latent)
    if args.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = psutil.Process().memory_info().rss
    if args.memory_of == "forward":
        bare_forward(model, [pos, neg], latent)
    else:
        optimize_run(sds_loss(model, pos, neg), latent, 3)
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mib": (peak - base) / 2**20}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--pairs", type=int, default=8, help="alternating pack / diffusers SDS runs to compare")
    p.add_argument("--device", default="cpu")
    p.add_argument("--families-only", action="store_true", help="only the per-family SDS / KSampler rows")
    p.add_argument("--family-pairs", type=int, default=6, help="alternating pack / KSampler runs per family")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default; 1 on a shared CPU)")
    p.add_argument("--memory-of", choices=["forward", "sds"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_of:
        return measure_memory_in_this_process(args)
    if args.threads or args.device == "cpu" and args.families_only:
        torch.set_num_threads(args.threads or 1)
    if args.families_only:
        start_comfyui(args)
        return print_family_rows(args)

    model, (pos, neg, nfsd_neg) = setup(args)
    params = sum(t.numel() for t in model.model.diffusion_model.parameters())
    latent = torch.zeros(1, 4, args.latent, args.latent)
    losses = {"sds": sds_loss(model, pos, neg), "nfsd": nfsd_loss(model, pos, neg, nfsd_neg),
              "sdi refresh 1": sdi_loss(model, pos, neg, 1), "sdi refresh 10": sdi_loss(model, pos, neg, 10),
              "lmc unet": lmc_loss(model, pos, neg, "unet"), "lmc spectral": lmc_loss(model, pos, neg, "spectral")}
    variants = variant_losses(model, pos, neg, nfsd_neg)
    losses |= variants
    bare = {"2-branch": [pos, neg], "3-branch": [pos, neg, nfsd_neg]}
    unet = diffusers_unet(model).to(model.load_device)
    for _ in range(3):
        bare_forward(model, bare["3-branch"], latent)
    times = {k: [] for k in [*bare, *losses]}
    for _ in range(2):  # interleaved, so drift in machine load hits every row alike
        for name, conds in bare.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                bare_forward(model, conds, latent)
                times[name].append(time.perf_counter() - t0)
        for name, loss in losses.items():
            times[name] += optimize_run(loss, latent, args.steps + 1)
    side_by_side = {"pack": [], "diffusers": []}
    for i in range(args.pairs):  # pack SDS vs diffusers SDS in alternating order; a ratio per pair, so drift cancels
        for side in ("pack", "diffusers") if i % 2 == 0 else ("diffusers", "pack"):
            run = (optimize_run(losses["sds"], latent, args.steps + 1) if side == "pack"
                   else diffusers_sds_run(unet, [pos, neg], latent, args.steps + 1))
            side_by_side[side].append(statistics.mean(run))
    pairs = [p / d for p, d in zip(side_by_side["pack"], side_by_side["diffusers"])]
    # bare forwards: median; loss steps: mean, since an SDI step's cost follows its annealed t
    t = {k: (statistics.median if k in bare else statistics.mean)(v) for k, v in times.items()}
    mem_f, mem_s = peak_memory(args, "forward"), peak_memory(args, "sds")
    print(f"model: SD1.5-shaped UNet, {args.channels} channels, {params / 1e6:.1f}M parameters; "
          f"latent 1x4x{args.latent}x{args.latent}; device {args.device}; torch {torch.__version__}")
    print("per-iteration ms (bare forwards: median; loss steps: mean): " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in t.items()))
    print(f"time   SDS step / bare 2-branch forward: {t['sds'] / t['2-branch']:.3f}")
    print(f"time   NFSD step / bare 3-branch forward: {t['nfsd'] / t['3-branch']:.3f}")
    print(f"time   NFSD step / SDS step: {t['nfsd'] / t['sds']:.3f}")
    for k in (1, 10):
        print(f"time   SDI step (refresh_every {k}) / SDS step: {t[f'sdi refresh {k}'] / t['sds']:.3f}")
    for kind in ("unet", "spectral"):
        print(f"time   LMC-SDS step ({kind} corrector) / SDS step: {t[f'lmc {kind}'] / t['sds']:.3f}")
    counted = {k: forwards_per_step(model, losses[k], latent, 2 * args.steps) for k in ("sds", *variants)}
    for k, (calls, rows) in counted.items():
        print(f"forwards {k}: {calls:.2f} calls, {rows:.2f} branch evaluations per step" +
              ("" if k == "sds" else f"; time {k} step / SDS step: {t[k] / t['sds']:.3f}"))
    ms = {side: statistics.median(v) * 1e3 for side, v in side_by_side.items()}
    print(f"time   SDS step via ComfyUI / threestudio-style SDS step on diffusers, same weights: median "
          f"{statistics.median(pairs):.3f} of {len(pairs)} pairs (range {min(pairs):.3f}–{max(pairs):.3f}; "
          f"ms {ms['pack']:.1f} / {ms['diffusers']:.1f})")
    print(f"memory peak bare 2-branch forward {mem_f:.1f} MiB, SDS run {mem_s:.1f} MiB: ratio {mem_s / max(mem_f, 1e-9):.3f}")
    print_family_rows(args)

if __name__ == "__main__":
    main()
