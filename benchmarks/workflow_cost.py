"""What each shipped workflow costs: diffusion-model forwards per step, measured CPU time per step with the tests'
tiny SD1.5 checkpoint, and the arithmetic of one forward of SD1.5, SDXL and Flux at their native sizes.

Forwards: a headless ComfyUI (the tests' server, tiny SD1.5-format checkpoint, every workflow at its own 512×512 or at
--size; the README's table ran at --size 64 --low 2 --high 4, 39 minutes on a loaded 2-core machine) logs the batch
size of every diffusion-model forward; each workflow runs once to load and cache its inputs, then
at two step counts, and the difference over the extra steps is one step's cost (calls, images through the model,
and the CPU seconds the server process used, user + system over all its threads: on a shared machine wall time
measures the neighbours too). Arithmetic: PyTorch's FlopCounterMode over ComfyUI's own model
classes built on the meta device (no weights, no memory), one image per forward. Needs ComfyUI, found as the tests
find it.

    python benchmarks/workflow_cost.py [--low 2] [--high 4] [--size 512] [--tflops 50]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path += [str(ROOT), str(ROOT / "tests")]  # appended: ComfyUI's own `nodes` stays first
import comfy_harness as harness  # noqa: E402

API = ROOT / "example_workflows" / "api"
# Train LMC Corrector is a one-off and its work is not per step: run at the tests' small settings.
TRAIN_FAST = {"pairs_per_latent": 2, "image_size": 64, "folder": ""}


def import_comfy() -> None:
    """ComfyUI importable in this process, on the CPU, with PyTorch's attention (the others ask the device for
    free memory, which the meta device has not)."""
    sys.path.insert(0, str(harness.COMFYUI))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.use_pytorch_cross_attention = True


def flops_per_forward() -> list[tuple[str, str, float]]:
    """TFLOPs of one single-image forward: (model, input, TFLOPs)."""
    import_comfy()
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import comfy.ops
    from comfy.ldm.flux.model import Flux
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    meta, ops = torch.device("meta"), comfy.ops.disable_weight_init
    unet = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
                in_channels=4, model_channels=320, use_temporal_attention=False, use_temporal_resblock=False,
                device=meta, operations=ops, dtype=torch.float16)
    sd15 = UNetModel(**unet, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4], transformer_depth=[1] * 6 + [0, 0],
                     transformer_depth_middle=1, transformer_depth_output=[1] * 9 + [0] * 3,
                     use_linear_in_transformer=False, context_dim=768, num_heads=8)
    sdxl = UNetModel(**unet, num_classes="sequential", adm_in_channels=2816, num_res_blocks=[2, 2, 2],
                     channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10,
                     transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_linear_in_transformer=True,
                     context_dim=2048, num_head_channels=64)
    flux = Flux(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
                num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
                qkv_bias=True, guidance_embed=True, device=meta, operations=ops, dtype=torch.bfloat16)

    def r(*shape, dtype=torch.float16):
        return torch.randn(*shape, device=meta, dtype=dtype)

    def count(model, *args, **kwargs) -> float:
        with FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
        return counter.get_total_flops() / 1e12

    tiny = UNetModel(**harness.TINY_SD15_UNET, device=meta, operations=ops, dtype=torch.float32)
    t = torch.full((1,), 500.0, device=meta)
    return [
        ("the tests' tiny SD1.5 UNet (37M parameters)", "512×512 (latent 64×64), 77 tokens",
         count(tiny, r(1, 4, 64, 64, dtype=torch.float32), t, context=r(1, 77, 768, dtype=torch.float32))),
        ("SD1.5 UNet", "512×512 (latent 64×64), 77 tokens", count(sd15, r(1, 4, 64, 64), t, context=r(1, 77, 768))),
        ("SDXL UNet", "1024×1024 (latent 128×128), 77 tokens",
         count(sdxl, r(1, 4, 128, 128), t, context=r(1, 77, 2048), y=r(1, 2816))),
        ("Flux.1-dev", "1024×1024 (latent 16×128×128), 512 T5 tokens",
         count(flux, r(1, 16, 128, 128, dtype=torch.bfloat16), torch.full((1,), 0.5, device=meta),
               r(1, 512, 4096, dtype=torch.bfloat16), y=r(1, 768, dtype=torch.bfloat16),
               guidance=torch.full((1,), 3.5, device=meta))),
    ]


def step_inputs(prompt: dict) -> dict[str, str]:
    """The node id and input that set a workflow's step count."""
    for node_id, node in prompt.items():
        if node["class_type"] in ("DistillOptimizeLatent", "DistillOptimizeImage"):
            return {"node": node_id, "input": "steps"}
    return {}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(server, prompt: dict, log: Path) -> tuple[float, list[int]]:
    """CPU seconds the server used for the prompt, and the batch size of each forward it made."""
    before = len(log.read_text().split()) if log.exists() else 0
    start = cpu_seconds(server.proc.pid)
    entry = server.run_prompt(prompt, timeout=3600)
    seconds = cpu_seconds(server.proc.pid) - start
    assert "execution_success" in [kind for kind, _ in entry["status"]["messages"]], entry["status"]
    batches = [int(b) for b in log.read_text().split()[before:]] if log.exists() else []
    return seconds, batches


def at_size(prompt: dict, size: int) -> dict:
    """The workflow with its image size (empty latent, Optimize Image's size and native size) set to size."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        for key in ("width", "height", "native_size"):
            if key in node["inputs"] and node["class_type"] in ("EmptyLatentImage", "DistillOptimizeImage"):
                node["inputs"][key] = size
    return prompt


def with_steps(prompt: dict, steps: int, **inputs) -> dict:
    prompt = json.loads(json.dumps(prompt))
    opt = step_inputs(prompt)
    prompt[opt["node"]]["inputs"]["steps"] = steps
    for key, value in inputs.items():
        prompt[opt["node"]]["inputs"][key] = value
    return prompt


def phase_steps(prompt: dict, phase: str) -> int:
    """How many of the workflow's own steps a phase has: Optimize Image's whole-image phase comes first."""
    inputs = prompt[step_inputs(prompt)["node"]]["inputs"]
    whole = min(inputs.get("whole_image_steps", inputs["steps"]), inputs["steps"])
    return {"": inputs["steps"], "whole image": whole, "patches": inputs["steps"] - whole}[phase]


def measure_workflows(low: int, high: int, size: int) -> list[tuple]:
    import numpy as np
    from PIL import Image

    from headless.workflow import find_node

    import_comfy()  # for the checkpoint file
    base = Path(tempfile.mkdtemp(prefix="workflow_cost_"))
    log = base / "forwards.log"
    sds = json.loads((API / "sds_text_to_image.json").read_text())
    harness.tiny_checkpoint(base / "models" / "checkpoints" / sds[find_node(sds, "CheckpointLoaderSimple")]["inputs"]
                            ["ckpt_name"])
    (base / "input").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 4), dtype=np.uint8)
    pixels[..., 3], pixels[:, size // 2:, 3] = 255, 0  # the right half painted as masked_editing's mask
    Image.fromarray(pixels).save(base / "input" / "example.png")
    server, rows = None, []
    try:
        server = harness.Server(base, env={"DISTILL_TEST_FORWARDS": str(log)})
        train = json.loads((API / "train_corrector.json").read_text())
        node = train[find_node(train, "DistillTrainLMCCorrector")]
        node["inputs"] |= TRAIN_FAST
        seconds, batches = run(server, train, log)
        rows.append(("train_corrector", "once (pairs_per_latent 2, 64 px)", len(batches), sum(batches), seconds, 1))
        for path in sorted(API.glob("*.json")):
            if path.stem == "train_corrector":
                continue
            prompt = at_size(json.loads(path.read_text()), size)
            phases = [("", {})]
            if any(n["class_type"] == "DistillOptimizeImage" for n in prompt.values()):
                phases = [("whole image", {}), ("patches", {"whole_image_steps": 0})]
            for phase, inputs in phases:
                run(server, with_steps(prompt, low - 1, **inputs), log)  # loads the model, caches the prompts
                t_low, b_low = run(server, with_steps(prompt, low, **inputs), log)
                t_high, b_high = run(server, with_steps(prompt, high, **inputs), log)
                n = high - low
                rows.append((path.stem, phase, (len(b_high) - len(b_low)) / n, (sum(b_high) - sum(b_low)) / n,
                             (t_high - t_low) / n, phase_steps(prompt, phase)))
                print(*rows[-1], sep=" | ", flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base)  # the checkpoint is 488 MB
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--low", type=int, default=2)
    parser.add_argument("--high", type=int, default=4)
    parser.add_argument("--size", type=int, default=512, help="image size of every workflow (theirs: 512)")
    parser.add_argument("--tflops", type=float, default=50.0,
                        help="the achieved fp16/bf16 throughput the GPU estimates assume (TFLOP/s)")
    args = parser.parse_args()
    if args.low < 2 or args.high <= args.low:
        parser.error("--low must be at least 2 (a warm-up runs low - 1 steps) and --high above it")
    flops = flops_per_forward()
    print("| model | input | TFLOPs per forward (one image) |\n| --- | --- | ---: |")
    for model, shape, tflops in flops:
        print(f"| {model} | {shape} | {tflops:.2f} |", flush=True)
    start = time.time()
    rows = measure_workflows(args.low, args.high, args.size)
    per_image = {name: tflops for name, _, tflops in flops[1:]}
    print(f"\n| workflow | model calls × images per step | steps | tiny SD1.5 at {args.size}², CPU s per step | "
          + " | ".join(f"{name}, GPU min per run" for name in per_image) + " |")
    print("| --- | --- | ---: | ---: |" + " ---: |" * len(per_image))
    for name, phase, calls, images, seconds, steps in rows:
        label = f"{name} ({phase})" if phase else name
        gpu = [f"{images * steps * tflops / args.tflops / 60:.1f}" if steps > 1 else "–" for tflops in per_image.values()]
        print(f"| {label} | {calls:g} × {images / calls if calls else 0:g} | {steps} | {seconds:.2f} | "
              + " | ".join(gpu) + " |")
    print(f"\n({time.time() - start:.0f} s; GPU columns: images × steps × TFLOPs per image ÷ {args.tflops:g} TFLOP/s)")


if __name__ == "__main__":
    main()
