"""pds_editing's one SDEdit pass against the PDS 2D notebook's SDEdit refinement loop, on the exact mixture prior.

The latents are PDS edits as benchmarks/quality.py makes them (the prior's images of each class edited toward the
next at pds_editing's settings: cfg 50, adam_torch lr 0.1, --pds-steps steps), and as a second start the source
images themselves. Each is refined toward the target class at cfg 15 (the negative branch = all images, as the null
prompt) by
- one pass, as pds_editing's KSampler (ddim, ddim_uniform, steps 3, denoise 0.15): the 20-step grid t = 951, 901, …,
  1 of the prior's ᾱ, re-noised to t = 101 and 3 DDIM steps at η = 0, the last to the clean end (ᾱ = 1);
- the notebook's loop (`2d_image_editing_playground.ipynb`, `run_sdedit` in pds/pds.py): a fresh AdamW at lr 0.1
  (PyTorch's defaults: weight decay 0.01), 50 steps on MSELoss(edit, x) (mean over the image's elements), each
  step's edit a fresh no-grad SDEdit pass of the current x: skip = random.randint(16, 18), re-noised to
  t = 51, 101 or 151, 2–4 DDIM steps at η = 0, the last to diffusers' final ᾱ = ᾱ(t = 0) (set_alpha_to_one False);
  and the loop with each difference undone in turn. Each batch item is its own notebook run (own skips and noise).
DDIM is written here from the prior's ᾱ = 1/(1 + σ²) (diffusers' convention: x_t = √ᾱ·x + √(1 − ᾱ)·ε).

    OMP_NUM_THREADS=1 python benchmarks/sdedit_refinement.py [--seeds 8] [--pds-steps 500]
"""
import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from quality import (EDIT_TARGET, PDS_SETTINGS, TRAIN, edit, edit_scores, editing_methods,  # noqa: E402
                     editing_prior, sources)
from distill.quality import neighbour_scale  # noqa: E402

GRID = list(range(951, 0, -50))
"""diffusers' DDIM timesteps at 20 inference steps (leading spacing, steps_offset 1): 951, 901, …, 1; also ComfyUI's
ddim_uniform at 20 steps (sigmas[1::50] reversed)."""
CFG = 15.0
ITERS, LR = 50, 0.1
SKIPS = (16, 17, 18)  # int(20·0.8) … int(20·0.9), random.randint's inclusive range


def skip_start(skip: int) -> int:
    """run_sdedit's re-noising timestep: reversed(timesteps)[20 − skip − 1] (16 → 151, 17 → 101, 18 → 51)."""
    return GRID[::-1][len(GRID) - skip - 1]


def abar_table(den) -> torch.Tensor:
    """ᾱ_t = 1/(1 + σ_t²) for t = 0 … 999, from the prior's σ table (SD1.5's: diffusers' alphas_cumprod)."""
    return 1 / (1 + den.sigmas.double() ** 2)


def eps_hat(den, x_t: torch.Tensor, t: int, abar: torch.Tensor) -> torch.Tensor:
    """ε̂ = ε̂_u + cfg·(ε̂_c − ε̂_u) at VP x_t, from the exact x0 of x_t/√ᾱ at σ_t (the prior's VE view)."""
    a = abar[t]
    sigma = torch.full((len(x_t),), ((1 - a) / a).sqrt().item())
    x_ve = x_t / a.sqrt()
    x0 = {b: den.x0(x_ve.float(), sigma, b).double() for b in ("positive", "negative")}
    guided = x0["negative"] + CFG * (x0["positive"] - x0["negative"])
    return (x_t - a.sqrt() * guided) / (1 - a).sqrt()


def sdedit(den, x: torch.Tensor, t_start: int, final_abar: float, g: torch.Generator) -> torch.Tensor:
    """Re-noise x to t_start, then DDIM (η = 0) down GRID from there: x_prev = √ᾱ'·x̂0 + √(1 − ᾱ')·ε̂, the last step
    to final_abar."""
    abar = abar_table(den)
    x = x.double()
    x_t = abar[t_start].sqrt() * x + (1 - abar[t_start]).sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype)
    steps = GRID[GRID.index(t_start):]
    for t, t_prev in zip(steps, steps[1:] + [None]):
        e = eps_hat(den, x_t, t, abar)
        x0 = (x_t - (1 - abar[t]).sqrt() * e) / abar[t].sqrt()
        a_prev = torch.tensor(final_abar, dtype=x.dtype) if t_prev is None else abar[t_prev]
        x_t = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
    return x_t.float()


def notebook_loop(den, x: torch.Tensor, seed: int, weight_decay: float = 0.01, skips=SKIPS,
                  final_abar: float | None = None) -> tuple[torch.Tensor, float]:
    """The notebook's refinement, every item its own run; returns the result and the mean per-element RMS of the
    last step's move (the loop's own step size at its end)."""
    final_abar = abar_table(den)[0].item() if final_abar is None else final_abar
    draw, g = random.Random(seed), torch.Generator().manual_seed(seed)
    z = x.clone().requires_grad_(True)
    opt = torch.optim.AdamW([z], lr=LR, weight_decay=weight_decay)
    for _ in range(ITERS):
        skip = torch.tensor([draw.choice(skips) for _ in range(len(x))])
        target = torch.empty_like(x)
        with torch.no_grad():
            for s in skip.unique().tolist():
                idx = (skip == s).nonzero().flatten()
                target[idx] = sdedit(den, z[idx], skip_start(s), final_abar, g)
        before = z.detach().clone()
        opt.zero_grad()
        ((z - target) ** 2).flatten(1).mean(1).sum().backward()  # each item's MSELoss (mean) on its own
        opt.step()
    last = (z.detach() - before).flatten(1).pow(2).mean(1).sqrt().mean().item()
    return z.detach(), last


def refinements(den, x: torch.Tensor, seed: int) -> dict[str, tuple[torch.Tensor, float | None]]:
    one = lambda final: (sdedit(den, x, 101, final, torch.Generator().manual_seed(seed)), None)  # noqa: E731
    return {
        "unrefined": (x, None),
        "one pass (KSampler)": one(1.0),
        "one pass, to ᾱ(0)": one(abar_table(den)[0].item()),
        "notebook loop": notebook_loop(den, x, seed),
        "loop, weight decay 0": notebook_loop(den, x, seed, weight_decay=0.0),
        "loop, skip 17 (t=101)": notebook_loop(den, x, seed, skips=(17,)),
        "loop, wd 0, skip 17, clean end": notebook_loop(den, x, seed, weight_decay=0.0, skips=(17,), final_abar=1.0),
    }


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Median distance between same items, in the source class's neighbour units, averaged over the pairs."""
    d = [(a[t] - b[t]).flatten(1).double().norm(dim=1).median().item() / neighbour_scale(TRAIN.of(s))
         for s, t in EDIT_TARGET.items()]
    return sum(d) / len(d)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=8, help="images per class")
    p.add_argument("--pds-steps", type=int, default=PDS_SETTINGS.steps)
    args = p.parse_args()
    began = time.time()
    torch.set_num_threads(1)
    originals = sources(TRAIN, args.seeds)
    pds = edit(editing_methods()["PDS"], originals, args.pds_steps / PDS_SETTINGS.steps)
    print(f"{args.seeds} of the prior's images per class edited toward the next class; PDS {args.pds_steps} steps "
          f"({time.time() - began:.0f} s).\nto source, moved and Δ in neighbour units; adherence, std and high band "
          "against the target class; moved = distance\nfrom the unrefined start; Δ one pass = distance to the one pass "
          "(KSampler); Δ/moved = Δ over the one pass's own move;\nlast step = RMS per element of the loop's last move "
          f"(its lr is {LR})")
    for start_name, start in (("PDS edit", pds), ("source image", originals)):
        print(f"\nstart: {start_name}\n{'refinement':<31}{'to source':>10}{'adher.':>8}{'std':>7}{'high':>7}"
              f"{'moved':>8}{'Δ one pass':>12}{'Δ/moved':>9}{'last step':>11}")
        out = {t: {} for t in EDIT_TARGET.values()}
        steps = {}
        for k, (s, t) in enumerate(EDIT_TARGET.items()):
            for name, (x, last) in refinements(editing_prior(s, t), start[t], k).items():
                out[t][name] = x
                steps.setdefault(name, []).append(last)
        names = list(out[next(iter(out))])
        by = {n: {t: out[t][n] for t in out} for n in names}
        one_moved = distance(by["one pass (KSampler)"], by["unrefined"])
        for n in names:
            d, sc = edit_scores(by[n], originals)
            last = "" if steps[n][0] is None else f"{sum(steps[n]) / len(steps[n]):11.3f}"
            delta = distance(by[n], by["one pass (KSampler)"])
            print(f"{n:<31}{d:10.2f}{sc.adherence:8.2f}{sc.std:7.2f}{sc.band_power[2]:7.2f}"
                  f"{distance(by[n], by['unrefined']):8.2f}{delta:12.2f}{delta / one_moved:9.2f}{last}")
    print(f"\n{time.time() - began:.0f} s in all")


if __name__ == "__main__":
    main()
