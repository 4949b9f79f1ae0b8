"""Make an LMC corrector for a checkpoint from the command line, with the pack's own training function.

    python corrector_weights/make_corrector.py --checkpoint PATH [--images DIR] [--kind spectral|unet]
        [--out NAME.safetensors] [--overwrite] [--steps 3000] [--pairs 64] [--size 512] [--comfyui PATH] [--cpu]

It starts ComfyUI's model code in this process (found through --comfyui, COMFYUI_PATH, the pack's
grandparent folder when installed in custom_nodes/, or ~/comfy/ComfyUI), loads the pack as ComfyUI
does, loads the checkpoint with its CLIP and VAE, and writes models/lmc_correctors/NAME.
"""
import argparse
import asyncio
import importlib
import os
import sys
from pathlib import Path

PACK = Path(__file__).resolve().parents[1]


def find_comfyui(explicit: str | None) -> Path:
    candidates = [explicit, os.environ.get("COMFYUI_PATH"),
                  str(PACK.parent.parent) if PACK.parent.name == "custom_nodes" else None,
                  str(Path.home() / "comfy" / "ComfyUI")]
    for c in filter(None, candidates):
        if (Path(c) / "comfy" / "samplers.py").is_file():
            return Path(c).resolve()
    sys.exit("No ComfyUI found: pass --comfyui PATH or set COMFYUI_PATH.")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint file with UNet, CLIP and VAE")
    p.add_argument("--images", help="a folder of images like those you will optimize (default: the model samples)")
    p.add_argument("--kind", choices=["spectral", "unet"], default="spectral")
    p.add_argument("--out", default=None, help="file name in models/lmc_correctors (default: <checkpoint>_<kind>)")
    p.add_argument("--steps", type=int, default=3000, help="U-Net training steps")
    p.add_argument("--pairs", type=int, default=64, help="triplets per latent")
    p.add_argument("--size", type=int, default=512, help="pixel size of the images or of the model's samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--comfyui", help="ComfyUI folder")
    p.add_argument("--cpu", action="store_true", help="run on the CPU")
    p.add_argument("--overwrite", action="store_true", help="replace an existing corrector of that name")
    args = p.parse_args()
    for flag, value, low in (("--steps", args.steps, 1), ("--pairs", args.pairs, 1), ("--size", args.size, 64)):
        if value < low:
            p.error(f"{flag} must be at least {low}, got {value}")

    comfyui = find_comfyui(args.comfyui)
    sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = args.cpu
    import comfy.sd
    import folder_paths
    import nodes

    asyncio.run(nodes.load_custom_node(str(PACK)))
    module = nodes.NODE_CLASS_MAPPINGS["DistillTrainLMCCorrector"].__module__
    train = importlib.import_module(module)

    model, clip, vae, *_ = comfy.sd.load_checkpoint_guess_config(
        args.checkpoint, output_vae=True, output_clip=True,
        embedding_directory=folder_paths.get_folder_paths("embeddings"))
    if clip is None or vae is None:
        sys.exit(f"{args.checkpoint}: the checkpoint has no CLIP or no VAE; this command needs both.")
    unconditional = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    out = args.out or f"{Path(args.checkpoint).stem}_{args.kind}.safetensors"
    problem = train.correctors.name_problem(out)
    if problem:
        sys.exit(f"--out: {problem}")
    try:
        train.correctors.new_file(out, args.overwrite)
    except ValueError as e:
        sys.exit(f"--out: {e}")
    if args.images and not Path(args.images).is_dir():
        sys.exit(f"--images: {args.images} is not a folder.")
    latents = vae.encode(train.folder_images(Path(args.images), args.size)) if args.images else None

    def progress(phase, done, total):
        print(f"\r{phase} {done}/{total}", end="\n" if done == total else "", flush=True)

    path, losses, residual = train.train_for_model(model, unconditional, latents, kind=args.kind, pairs=args.pairs,
                                                   steps=args.steps, seed=args.seed, filename=out,
                                                   sample_size=args.size // 8, progress=progress,
                                                   overwrite=args.overwrite)
    print(f"saved {path} (relative residual {residual.nanmean():.3g}"
          + (f", final L_k {losses[-1]:.3g})" if losses else ")"))


if __name__ == "__main__":
    main()
