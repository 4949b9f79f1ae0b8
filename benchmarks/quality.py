"""Quality of every method on an exact non-linear prior, relative to real images of the prompted class.

The prior is the mixture of narrow Gaussians over a dataset of sharp-edged shapes (distill.shapes,
distill.mixture): its denoiser is exact, so what a method does here is the method, not a model's error.
Each method runs as its node builds it, at its shipped workflow's settings, for every class (prompt), from
a random N(0, I) and from a zero (Empty Latent Image) start, a batch of seeds each; DDIM sampling on the
same prior is the reference. Scores are relative to the class's real images (distill.quality; 1 = like
the data); "held-out data" are new images of the same classes. Editing: images of each class, the prior's own
and held-out ones, are edited toward the next class (source prompt = their class, target prompt = the next) by
DDS and PDS at their workflows' settings, and by SDS (cfg 101, its default) with the same target at each of
those settings; scored by the distance to the source image and against the target class. Needs only torch (and Pillow for the grid).

    python benchmarks/quality.py [--seeds 8] [--steps 500] [--explain] [--out benchmarks/out/quality_grid.png]

--explain adds the measurements behind the README's explanations: what the results are made of, ablation runs
and step diagnostics (a few minutes more).
"""
import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from PIL import Image, ImageDraw, ImageFont

sys.path.append(str(Path(__file__).resolve().parents[1]))
from distill import (DDIMInversion, Run, ScoreDistillation, Settings, ddim_sample, item_generators,  # noqa: E402
                     optimize, predict, recipes)
from distill.corrector import collect_triplets, fit_spectral  # noqa: E402
from distill.mixture import MixtureDenoiser, shapes_prior  # noqa: E402
from distill.quality import Scores, distance_to_source, neighbour_scale, scores  # noqa: E402
from distill.schedule import sigma_at  # noqa: E402
from distill.shapes import CLASSES, make_shapes  # noqa: E402

TRAIN, HELD_OUT = make_shapes(64, seed=0), make_shapes(64, seed=1)
WIDTH = 0.02
"""The components' std s0: s0·√d ≈ 1.1 against nearest-neighbour distances of 17–20 between images."""
T_RANGE = (0.02, 0.98)  # Train LMC Corrector's


def train_corrector(seed: int = 0):
    """Train LMC Corrector at its defaults (spectral, no images: 16 of the prior's own DDIM samples, 64 pairs each)."""
    unconditional = MixtureDenoiser({"positive": TRAIN.images}, WIDTH)
    g = torch.Generator().manual_seed(seed)
    samples = ddim_sample(unconditional, torch.randn((16, *TRAIN.images.shape[1:]), generator=g), 50)
    data = collect_triplets(unconditional, samples, 64, g, T_RANGE)
    return fit_spectral(data.z, data.z_hat, data.t, t_range=T_RANGE)


def methods(corrector) -> dict[str, ScoreDistillation]:
    """Each loss as its node builds it (distill.recipes) at its shipped workflow's settings."""
    return {
        "SDS cfg 7.5": recipes.sds(cfg=7.5),
        "SDS cfg 101": recipes.sds(),
        "NFSD": recipes.nfsd(),
        "SDI": recipes.sdi(),
        "LMC-SDS": recipes.lmc_sds(corrector),
        "LMC-SDS fixed noise": recipes.lmc_sds(corrector, fixed_noise=True),
    }


SETTINGS = Settings(steps=500, lr=0.1, optimizer="adamw", lr_schedule="cosine")  # Optimize Latent's


def variant_methods() -> dict[str, ScoreDistillation]:
    """CSD, ISM, SDS-Bridge and ASD at their nodes' defaults (their authors'), and SDS at SDS-Bridge's cfg 40."""
    return {
        "CSD": recipes.csd(),
        "ISM": recipes.ism(),
        "SDS cfg 40": recipes.sds(cfg=40.0),
        "SDS-Bridge": recipes.sds_bridge(),
        "ASD": recipes.asd(),
    }


def variants_prior(prompt: str) -> MixtureDenoiser:
    """The shapes prior with the variants' prompts: "csd_negative" = NFSD's blurred images (CSD's "low quality,
    noisy"), "bridge_target" = the class (the prompt + "detailed, sharp"), "bridge_source" = the class blurred by a
    pixel with its contrast doubled (the prompt + "oversaturated, smooth, blurry")."""
    blurred = TRAIN.blurred(1.0)
    return MixtureDenoiser({"positive": TRAIN.of(prompt), "negative": TRAIN.images, "nfsd_negative": blurred.images,
                            "csd_negative": blurred.images, "bridge_target": TRAIN.of(prompt),
                            "bridge_source": 2 * blurred.of(prompt)}, WIDTH)


def same_seed_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The mean distance between two methods' results of the same class and seed, in the class's neighbour units."""
    d = [(a[c] - b[c]).flatten(1).double().norm(dim=1).mean().item() / neighbour_scale(TRAIN.of(c)) for c in CLASSES]
    return sum(d) / len(d)


def claims(results: dict[str, dict[str, torch.Tensor]]) -> None:
    """Each variant's headline claim as a measured property of the runs above (random start)."""
    s = {name: class_scores(results[f"{name}, random"]) for name in ("SDS cfg 7.5", "SDS cfg 40", "CSD", "NFSD", "ISM",
                                                                     "SDS-Bridge", "ASD")}
    near = {name: same_seed_distance(results[f"{name}, random"], results["NFSD, random"])
            for name in ("CSD", "SDS cfg 7.5")}
    print("\nheadline claims, random start (scores as in the table)")
    print(f"  CSD vs NFSD: same-seed distance CSD–NFSD {near['CSD']:.2f}, SDS cfg 7.5–NFSD {near['SDS cfg 7.5']:.2f} "
          "(neighbour units)")
    for name, base in (("CSD", "NFSD"), ("ISM", "SDS cfg 7.5"), ("SDS-Bridge", "SDS cfg 40"), ("ASD", "SDS cfg 7.5")):
        a, b = s[name], s[base]
        print(f"  {name} vs {base}: high-band power {a.band_power[2]:.2f} vs {b.band_power[2]:.2f}, fidelity "
              f"{a.fidelity:.2f} vs {b.fidelity:.2f}, max|x| {a.max_abs:.2f} vs {b.max_abs:.2f}, std {a.std:.2f} vs "
              f"{b.std:.2f}, diversity {a.diversity:.2f} vs {b.diversity:.2f}")


EDIT_TARGET = {c: CLASSES[(i + 1) % len(CLASSES)] for i, c in enumerate(CLASSES)}
"""Each class's images are edited toward the next class: disc → square → bar → ring → disc."""
DDS_SETTINGS = Settings(steps=200, lr=0.1, optimizer="sgd", lr_schedule="constant")  # dds_editing's: the notebook's
PDS_SETTINGS = Settings(steps=500, lr=0.1, optimizer="adam_torch", lr_schedule="constant")  # pds_editing's
PDS_CFG = 50.0  # pds_editing's, the authors' 2D notebook


def editing_methods() -> dict[str, tuple[Callable[[torch.Tensor], ScoreDistillation], Settings]]:
    """Each editing loss of a reference as its node builds it, with its workflow's optimizer settings; SDS at its
    default cfg 101 (what image_editing advises without a corrector) with the same target, at each of them."""
    return {
        "DDS": (recipes.dds, DDS_SETTINGS),
        "SDS cfg 101, DDS steps": (lambda reference: recipes.sds(), DDS_SETTINGS),
        "PDS": (lambda reference: recipes.pds(reference, cfg=PDS_CFG), PDS_SETTINGS),
        "SDS cfg 101, PDS steps": (lambda reference: recipes.sds(), PDS_SETTINGS),
    }


def editing_prior(source: str, target: str) -> MixtureDenoiser:
    """The shapes prior with the source class as the branch "source" and the target class as "positive"."""
    return MixtureDenoiser({"positive": TRAIN.of(target), "source": TRAIN.of(source), "negative": TRAIN.images}, WIDTH)


def sources(data, seeds: int) -> dict[str, torch.Tensor]:
    """The images to edit: seeds images of every class of data, keyed by their target."""
    return {target: data.of(source)[:seeds] for source, target in EDIT_TARGET.items()}


def edit(method, originals: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Every class's images edited toward the next class, one seed per image; keyed by the target."""
    loss_of, settings = method
    out = {}
    for k, (source, target) in enumerate(EDIT_TARGET.items()):
        settings_k = replace(settings, steps=max(1, round(settings.steps * scale)), seed=k)
        images = originals[target]
        out[target] = optimize(images, loss_of(images), editing_prior(source, target), settings_k)[0]
    return out


def edit_scores(out: dict[str, torch.Tensor], originals: dict[str, torch.Tensor]) -> tuple[float, Scores]:
    """The median distance to the source (in the source class's neighbour units) and the scores against the
    target class, each averaged over the pairs."""
    distance = [distance_to_source(out[t], originals[t], TRAIN.of(s)).median().item() for s, t in EDIT_TARGET.items()]
    return sum(distance) / len(distance), mean_scores([scores(out[t], TRAIN, t) for t in EDIT_TARGET.values()])


def start(kind: str, seeds: int, seed: int) -> torch.Tensor:
    shape = (seeds, *TRAIN.images.shape[1:])
    return torch.zeros(shape) if kind == "zero" else torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run(loss: ScoreDistillation, kind: str, seeds: int, settings: Settings, prior=None) -> dict[str, torch.Tensor]:
    """Optimize Latent with the loss for every class, one seed per batch item; prior(class) → the denoiser."""
    prior = prior or (lambda c: shapes_prior(TRAIN, c, WIDTH))
    return {c: optimize(start(kind, seeds, k), loss, prior(c), replace(settings, seed=k))[0]
            for k, c in enumerate(CLASSES)}


def mean_scores(per_class: list[Scores]) -> Scores:
    cols = list(zip(*per_class))
    return Scores(*[sum(c) / len(c) for c in cols[:-1]], tuple(sum(b) / len(b) for b in zip(*cols[-1])))


def class_scores(out: dict[str, torch.Tensor]) -> Scores:
    return mean_scores([scores(out[c], TRAIN, c) for c in CLASSES])


HEADER = (f"{'method':<24}{'start':<8}{'fidelity':>9}{'adher.':>8}{'divers.':>8}{'std':>7}{'max|x|':>8}"
          f"{'power low':>11}{'mid':>7}{'high':>7}{'cpu s':>7}")


EDIT_HEADER = (f"{'edit toward the next class':<27}{'to source':>10}{'fidelity':>9}{'adher.':>8}{'std':>7}"
               f"{'max|x|':>8}{'power low':>11}{'mid':>7}{'high':>7}{'cpu s':>7}")


def edit_row(name: str, distance: float, s: Scores, seconds: float) -> str:
    low, mid, high = s.band_power
    return (f"{name:<27}{distance:10.2f}{s.fidelity:9.2f}{s.adherence:8.2f}{s.std:7.2f}{s.max_abs:8.2f}"
            f"{low:11.2f}{mid:7.2f}{high:7.2f}{seconds:7.0f}")


def row(name: str, start_kind: str, s: Scores, seconds: float) -> str:
    low, mid, high = s.band_power
    return (f"{name:<24}{start_kind:<8}{s.fidelity:9.2f}{s.adherence:8.2f}{s.diversity:8.2f}{s.std:7.2f}"
            f"{s.max_abs:8.2f}{low:11.2f}{mid:7.2f}{high:7.2f}{seconds:7.0f}")


def nearest(x: torch.Tensor, images: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Indices [B, k] of the k images nearest to each result."""
    return torch.cdist(x.flatten(1).double(), images.flatten(1).double()).topk(k, largest=False).indices


def least_norm_share(out: dict[str, torch.Tensor]) -> float:
    """The share of results whose nearest image is among the least-norm quarter of its class (DDIM: ~0.25)."""
    hits = []
    for c, x in out.items():
        images = TRAIN.of(c)
        rank = images.flatten(1).norm(dim=1).argsort().argsort()
        hits.append((rank[nearest(x, images)[:, 0]] < len(images) // 4).double())
    return torch.cat(hits).mean().item()


def second_image_weight(out: dict[str, torch.Tensor]) -> float:
    """Least squares of each result on its two nearest images of the class: the mean smaller weight over the
    sum of both (0 = one image, 0.5 = an equal superposition of two)."""
    weights = []
    for c, x in out.items():
        images = TRAIN.of(c).flatten(1).double()
        for xi, pair in zip(x.flatten(1).double(), nearest(x, TRAIN.of(c), 2)):
            w = torch.linalg.lstsq(images[pair].T, xi[:, None]).solution.abs().flatten()
            weights.append((w.min() / w.sum()).item())
    return sum(weights) / len(weights)


def tile(x: torch.Tensor, scale: int, span: float = 2.5) -> Image.Image:
    """One latent as RGB from its first three channels, ±span → 0…255, clipped (over-saturation shows)."""
    rgb = ((x[:3] / span + 1) * 127.5).clamp(0, 255).byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(rgb)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def grid(results: dict[str, dict[str, torch.Tensor]], path: Path, per_class: int = 3, scale: int = 2) -> None:
    """A row per method and start, per_class seeds of every class (prompt; editing: target) side by side."""
    side, label_w, pad, gap = TRAIN.images.shape[-1] * scale, 250, 2, 8
    font = ImageFont.load_default(size=13)
    column = per_class * (side + pad) + gap
    img = Image.new("RGB", (label_w + len(CLASSES) * column, 22 + len(results) * (side + pad)), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for i, prompt in enumerate(CLASSES):
        d.text((label_w + i * column, 3), prompt, fill=(0, 0, 0), font=font)
    for r, (name, by_class) in enumerate(results.items()):
        y = 22 + r * (side + pad)
        d.text((4, y + side // 2 - 8), name, fill=(0, 0, 0), font=font)
        for i, prompt in enumerate(CLASSES):
            for j in range(per_class):
                img.paste(tile(by_class[prompt][j], scale), (label_w + i * column + j * (side + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def sdi_step_targets(inversion_steps: int, t: float = 0.4, pairs: int = 8) -> list[float]:
    """Where one SDI step (η = 0, no jitter, cfg 1) sends latents 0.1/0.3/0.7/0.9 of the way from one disc to
    another, as the fraction of that way (0 = the first, 1 = the second, 0.5 = their superposition); mean over pairs."""
    images = TRAIN.of("disc")
    den = shapes_prior(TRAIN, "disc", WIDTH)
    fractions = torch.tensor([0.1, 0.3, 0.7, 0.9])
    first, second = images[0:2 * pairs:2], images[1:2 * pairs:2]
    way = (second - first).repeat_interleave(len(fractions), 0)
    x = first.repeat_interleave(len(fractions), 0) + fractions.repeat(pairs).view(-1, 1, 1, 1) * way
    loss = recipes.sdi(cfg=1.0, t_min=t, t_max=t + 1e-6, noise=DDIMInversion(steps=inversion_steps, eta=0.0, jitter=False))
    g = loss.gradient(den, x, Run(item_generators(0, len(x))))
    moved = fractions.repeat(pairs) - (g * way).flatten(1).sum(1) / way.flatten(1).pow(2).sum(1)
    return moved.view(pairs, -1).mean(0).tolist()


def guidance_by_level(x: torch.Tensor, prompt: str, levels=(0.2, 0.5, 0.8, 0.95)) -> list[float]:
    """‖ε̂_c − ε̂_u‖ / ‖ε̂_u‖ at the results, per level: the share of L_cond (where a fixed ε acts) in the step."""
    den = shapes_prior(TRAIN, prompt, WIDTH)
    g = torch.Generator().manual_seed(0)
    out = []
    for t in levels:
        sigma = sigma_at(den.sigmas, torch.full((len(x),), t))
        noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g)
        p = predict(den, noisy, sigma, 8.0)
        eps_u, eps_c = ((noisy - p[k]) / sigma.view(-1, 1, 1, 1) for k in ("negative", "positive"))
        out.append(((eps_c - eps_u).flatten(1).norm(dim=1) / eps_u.flatten(1).norm(dim=1)).mean().item())
    return out


def explain(results: dict[str, dict[str, torch.Tensor]], seeds: int, settings: Settings) -> None:
    """Measurements behind the README's explanations: ablation runs and diagnostics (zero start)."""
    print("\nwhat the off results are made of (share of results on the least-norm quarter of their class: DDIM ~0.25;"
          "\nweight of the second image in a two-image fit: 0 = one image, 0.5 = an equal superposition)")
    for name, out in results.items():
        if name != "held-out data":
            print(f"  {name:<34}least-norm quarter {least_norm_share(out):5.2f}   second image {second_image_weight(out):5.2f}")

    print("\nablations, zero start")
    print(HEADER)
    unblurred = lambda c: MixtureDenoiser({"positive": TRAIN.of(c), "negative": TRAIN.images,  # noqa: E731
                                           "nfsd_negative": TRAIN.images}, WIDTH)
    ablations = {
        "NFSD threshold 0": (recipes.nfsd(threshold=0.0), None),
        "NFSD unblurred negative": (recipes.nfsd(), unblurred),
        "NFSD both": (recipes.nfsd(threshold=0.0), unblurred),
        "SDS cfg 101, t_max 0.6": (recipes.sds(t_max=0.6), None),
        "SDS cfg 7.5 fixed noise": (recipes.sds(cfg=7.5, fixed_noise=True), None),
    }
    for name, (loss, prior) in ablations.items():
        t0 = time.process_time()
        print(row(name, "zero", class_scores(run(loss, "zero", seeds, settings, prior)), time.process_time() - t0))

    for steps in (10, 1000):
        targets = ", ".join(f"{v:.2f}" for v in sdi_step_targets(steps))
        print(f"\none SDI step at t = 0.4 with {steps} inversion steps sends latents 0.1, 0.3, 0.7, 0.9 of the way "
              f"between two images to {targets}")
    fixed = results["LMC-SDS fixed noise, zero"]
    shares = [sum(v) / len(v) for v in zip(*(guidance_by_level(fixed[c], c) for c in CLASSES))]
    print("LMC-SDS fixed noise: ‖ε̂_c − ε̂_u‖/‖ε̂_u‖ at its results, t = 0.2 / 0.5 / 0.8 / 0.95: "
          + " / ".join(f"{v:.3f}" for v in shares))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=8, help="results per class and start (one batch, one seed each)")
    p.add_argument("--steps", type=int, default=SETTINGS.steps)
    p.add_argument("--explain", action="store_true", help="also run the ablations and diagnostics of the README")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "quality_grid.png")
    args = p.parse_args()
    began, cpu = time.time(), time.process_time()
    torch.set_num_threads(1)  # tiny tensors: a second thread only spins
    settings = replace(SETTINGS, steps=args.steps)

    print(f"{len(TRAIN.images)} images {tuple(TRAIN.images.shape[1:])} in {len(CLASSES)} classes, component std {WIDTH}; "
          f"{args.seeds} seeds per class; scores relative to the class's images (1 = like the data)\n")
    print(HEADER)
    results = {"held-out data": {c: HELD_OUT.of(c)[:args.seeds] for c in CLASSES}}
    print(row("held-out data", "-", class_scores(results["held-out data"]), 0))
    for cfg in (1.0, 7.5):
        t0 = time.process_time()
        out = {c: ddim_sample(shapes_prior(TRAIN, c, WIDTH), start("random", args.seeds, 0), 50, cfg) for c in CLASSES}
        name = f"DDIM 50 steps cfg {cfg:g}"
        print(row(name, "noise", class_scores(out), time.process_time() - t0))
        results[name] = out
    t0 = time.process_time()
    corrector = train_corrector()
    print(f"(LMC corrector: Train LMC Corrector's spectral fit, {time.process_time() - t0:.0f} s)")
    for name, loss in methods(corrector).items():
        for kind in ("random", "zero"):
            t0 = time.process_time()
            out = run(loss, kind, args.seeds, settings)
            print(row(name, kind, class_scores(out), time.process_time() - t0))
            results[f"{name}, {kind}"] = out
    for name, loss in variant_methods().items():
        for kind in ("random", "zero"):
            t0 = time.process_time()
            out = run(loss, kind, args.seeds, settings, variants_prior)
            print(row(name, kind, class_scores(out), time.process_time() - t0))
            results[f"{name}, {kind}"] = out
    claims(results)

    print("\nediting: images of each class toward the next (source prompt = their class, target = the next), images the"
          "\nprior holds (as a model reconstructs a photo) and held-out ones (which it snaps to another image of the class);"
          "\nto source = distance to the edited image over its class's median nearest-neighbour distance; the other"
          "\nscores against the target class; steps scaled with --steps")
    for kind, data in (("prior's", TRAIN), ("held-out", HELD_OUT)):
        print(f"\n{kind} images\n{EDIT_HEADER}")
        originals = sources(data, args.seeds)
        print(edit_row("unedited", *edit_scores(originals, originals), 0))
        results[f"edit {kind}: sources"] = originals
        for name, method in editing_methods().items():
            t0 = time.process_time()
            out = edit(method, originals, args.steps / SETTINGS.steps)
            print(edit_row(name, *edit_scores(out, originals), time.process_time() - t0))
            results[f"edit {kind}: {name}"] = out
    grid(results, args.out)
    print(f"\ngrid saved to {args.out}; {time.time() - began:.0f} s in all ({time.process_time() - cpu:.0f} s of CPU)")
    if args.explain:
        explain(results, args.seeds, settings)
        print(f"\n{time.time() - began:.0f} s in all with the explanations ({time.process_time() - cpu:.0f} s of CPU)")


if __name__ == "__main__":
    main()
