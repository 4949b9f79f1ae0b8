"""Writes every shipped workflow twice from one description: UI format (example_workflows/NAME.json, drag and
drop, listed in ComfyUI's template browser) and API format (example_workflows/api/NAME.json, POST /prompt), with
the same node ids in both.

The UI layout is computed from the graph: four groups left to right, prior (checkpoint, prompts, a loaded image),
loss, optimize (what is optimized, and the optimizer) and output, and inside each group one column per
step of data flow, so that every wire runs rightwards; heights are stacked, or placed by hand where PLACED says.
Node sizes follow what the frontend draws (measured in the browser: tests/test_browser.py checks that no node
overlaps another or hides a widget).

    python example_workflows/build.py
"""
import json
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
PROMPT = "a photograph of a red fox in a snowy forest, detailed fur, soft morning light"
NFSD_NEGATIVE = ("unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
                 "low-resolution, gloomy")

# Per node type: its link inputs (name, type) and outputs (name, type), in ComfyUI's order.
IO = {
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "EmptyLatentImage": ([], [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "PreviewImage": ([("images", "IMAGE")], []),
    "Note": ([], []),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "VAEEncode": ([("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")]),
    "DistillSDSLoss": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                        ("noise", "DISTILL_NOISE"), ("corrector", "LMC_CORRECTOR")], [("loss", "DISTILL_LOSS")]),
    "DistillLMCCorrector": ([], [("corrector", "LMC_CORRECTOR")]),
    "DistillOptimizeImage": ([("vae", "VAE"), ("loss", "DISTILL_LOSS"), ("image", "IMAGE"), ("mask", "MASK")],
                             [("image", "IMAGE"), ("loss_plot", "IMAGE")]),
    "DistillTrainLMCCorrector": ([("model", "MODEL"), ("unconditional", "CONDITIONING"), ("images", "IMAGE"),
                                  ("vae", "VAE")], [("corrector", "LMC_CORRECTOR"), ("fit_plot", "IMAGE")]),
    "DistillNFSDGuidance": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                             ("nfsd_negative", "CONDITIONING")], [("loss", "DISTILL_LOSS")]),
    "DistillDDIMInvertNoise": ([], [("noise", "DISTILL_NOISE")]),
    "DistillOptimizeLatent": ([("latent", "LATENT"), ("loss", "DISTILL_LOSS")],
                              [("latent", "LATENT"), ("loss_plot", "IMAGE")]),
    "DistillDDSLoss": ([("model", "MODEL"), ("reference", "LATENT"), ("source", "CONDITIONING"),
                        ("target", "CONDITIONING"), ("negative", "CONDITIONING")], [("loss", "DISTILL_LOSS")]),
    "DistillPDSLoss": ([("model", "MODEL"), ("reference", "LATENT"), ("source", "CONDITIONING"),
                        ("target", "CONDITIONING"), ("negative", "CONDITIONING")], [("loss", "DISTILL_LOSS")]),
    "SetLatentNoiseMask": ([("samples", "LATENT"), ("mask", "MASK")], [("LATENT", "LATENT")]),
    "Distill3DViewPrompts": ([("clip", "CLIP"), ("front", "CONDITIONING"), ("side", "CONDITIONING"),
                              ("back", "CONDITIONING"), ("overhead", "CONDITIONING")],
                             [("views", "DISTILL_VIEWS"), ("positive", "CONDITIONING")]),
    "DistillOptimize3D": ([("vae", "VAE"), ("loss", "DISTILL_LOSS"), ("views", "DISTILL_VIEWS")],
                          [("voxel", "VOXEL"), ("turntable", "IMAGE"), ("loss_plot", "IMAGE")]),
    "VoxelToMesh": ([("voxel", "VOXEL")], [("MESH", "MESH")]),
    "SaveGLB": ([("mesh", "MESH")], []),
    "SaveAnimatedWEBP": ([("images", "IMAGE")], []),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")], [("LATENT", "LATENT")]),
    "DistillCSDLoss": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                        ("csd_negative", "CONDITIONING")], [("loss", "DISTILL_LOSS")]),
    "DistillISMLoss": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                       [("loss", "DISTILL_LOSS")]),
    "DistillSDSBridgeLoss": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                              ("bridge_target", "CONDITIONING"), ("bridge_source", "CONDITIONING")],
                             [("loss", "DISTILL_LOSS")]),
    "DistillASDLoss": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                       [("loss", "DISTILL_LOSS")]),
    "LatentConcat": ([("samples1", "LATENT"), ("samples2", "LATENT")], [("LATENT", "LATENT")]),
}
# The frontend adds a "control after generate" widget after every INT input named seed or noise_seed
# unless the input declares control_after_generate=False, as Train LMC Corrector's does; the UI format
# holds its value. LoadImage's upload button also keeps a value there, and so does the 3D viewer that the
# frontend's Comfy.SaveGLB extension adds to Save GLB (an empty one).
SEEDS = ("seed", "noise_seed")
SEED_WITHOUT_CONTROL = {"DistillTrainLMCCorrector"}
UI_ONLY_WIDGETS = {"LoadImage": ["image"], "SaveGLB": [""]}
TIMESTEPS = {"weighting": "auto", "t_min": 0.02, "t_max": 0.98, "t_schedule": "uniform", "grad_clip": 0.0}
CORRECTOR = "v1-5-pruned-emaonly_spectral.safetensors"  # what corrector_weights/make_corrector.py names it

# Groups, left to right, and their colours (LiteGraph's group palette).
GROUPS = {"prior": "#3f789e", "loss": "#a1309b", "optimize": "#b58b2a", "output": "#8A8"}
OPTIMIZERS = {"DistillOptimizeLatent", "DistillOptimizeImage", "DistillTrainLMCCorrector", "DistillOptimize3D"}
PRIOR_OUTPUTS = {"MODEL", "CLIP", "VAE", "CONDITIONING"}
INPUT_IMAGES = {"LoadImage", "VAEEncode", "SetLatentNoiseMask"}  # the picture being edited, a prior of its own
LOSS_OUTPUTS = {"DISTILL_LOSS", "DISTILL_NOISE", "LMC_CORRECTOR"}

# Sizes in canvas pixels, measured in the browser (frontend 1.27.10): a node's title bar (30) sits above
# its box; in the box, from 6 down, a row per slot (20), then a row per widget (24) and 8 below them.
TITLE, SLOTS_TOP, SLOT, WIDGET, WIDGETS_BOTTOM = 30, 6, 20, 24, 8
# Nodes whose widgets have a minimum size of their own (multiline text, image preview), as measured.
MIN_SIZE = {"Note": (210, 88), "CLIPTextEncode": (243, 88), "LoadImage": (214, 326), "Distill3DViewPrompts": (210, 168),
            "SaveGLB": (210, 112)}
# Room beyond the minimum for text and images (SaveGLB: the size its frontend extension gives its 3D viewer);
# other nodes are WIDTH wide, or NARROW without widgets.
ROOM = {"CLIPTextEncode": (380, 110), "LoadImage": (300, 340), "SaveImage": (360, 330),
        "Distill3DViewPrompts": (340, 200), "SaveGLB": (400, 550), "SaveAnimatedWEBP": (360, 330),
        "DistillLMCCorrector": (340, 0), "DistillTrainLMCCorrector": (340, 0)}
WIDTH, NARROW = 300, 210
# The note: 10 px monospace text (the frontend's default textarea font), a character 6 px wide, a line 12 high.
NOTE_WIDTH, NOTE_CHAR, NOTE_PADDING = 640, (6, 12), 40
PAD, GROUP_TITLE, COLUMN_GAP, ROW_GAP, GROUP_GAP, WIRE_MARGIN = 20, 40, 50, 30, 50, 12
VIEW_MARGIN = (90, 100)  # where the note's corner lands at 100% zoom: clear of the side bar and the menu


def node(type_, widgets=None, links=None, title=None, last=False):
    """last: stack the node below the others of its column (a tall node whose column-mates' wires pass above it)."""
    return {"type": type_, "widgets": dict(widgets or {}), "links": dict(links or {}), "title": title, "last": last}


def prompt_nodes(prompt=PROMPT):
    return {
        "ckpt": node("CheckpointLoaderSimple", {"ckpt_name": CHECKPOINT}),
        "pos": node("CLIPTextEncode", {"text": prompt}, {"clip": ("ckpt", 1)}, "positive"),
        "neg": node("CLIPTextEncode", {"text": ""}, {"clip": ("ckpt", 1)}, "negative (empty = unconditional)"),
    }


EMPTY = {"empty": node("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1})}


def saved(name: str, image: tuple[str, int], plot: tuple[str, int], plot_name: str = "loss plot") -> dict:
    """The result and the optimizer's plot, each saved under a name that says what it is."""
    prefix = f"score_distillation/{name}"
    return {"save": node("SaveImage", {"filename_prefix": prefix}, {"images": image}, "result"),
            "plot": node("SaveImage", {"filename_prefix": f"{prefix}_{plot_name.replace(' ', '_')}"},
                         {"images": plot}, plot_name)}


def output_nodes(name, steps, lr, start="empty", **settings):
    return {
        "opt": node("DistillOptimizeLatent", {"steps": steps, "learning_rate": lr, "optimizer": "adamw",
                                              "lr_schedule": "cosine", "seed": 0, "l2_to_init": 0.0} | settings,
                    {"latent": (start, 0), "loss": ("loss", 0)}),
        "decode": node("VAEDecode", links={"samples": ("opt", 0), "vae": ("ckpt", 2)}),
    } | saved(name, ("decode", 0), ("opt", 1))


SDEDIT = {"seed": 0, "steps": 3, "cfg": 15.0, "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 0.15}
"""PDS's notebook refinement (run_sdedit: 20 DDIM steps, skip 16 to 18, so 2 to 4 run, cfg 15) as KSampler takes it:
int(steps / denoise) = 20 steps of ddim_uniform (diffusers' DDIM timesteps 951 … 1), the last 3 run from t = 101, the
last of them to σ = 0 (diffusers' to ᾱ_0). ComfyUI's ddim is Euler on the noise prediction: DDIM at η = 0."""


def sdedit_nodes(name: str) -> dict:
    """One SDEdit pass over Optimize Latent's result under the target prompt, decoded and saved as the result; the
    optimized latent's picture (output_nodes' "save") is kept, saved as what it was before the refinement."""
    return {
        "save": node("SaveImage", {"filename_prefix": f"score_distillation/{name}_unrefined"},
                     {"images": ("decode", 0)}, "before refinement"),
        "refine": node("KSampler", SDEDIT, {"model": ("ckpt", 0), "positive": ("tgt", 0), "negative": ("neg", 0),
                                            "latent_image": ("opt", 0)}, "SDEdit refinement (target prompt)"),
        "decode_refined": node("VAEDecode", links={"samples": ("refine", 0), "vae": ("ckpt", 2)}),
        "save_refined": node("SaveImage", {"filename_prefix": f"score_distillation/{name}"},
                             {"images": ("decode_refined", 0)}, "result (refined)"),
    }


def editing_nodes(loss_type, widgets, source="a photograph of a cat", target="a photograph of a tiger",
                  reference="encode"):
    """A loaded image encoded as the reference (and start), its source prompt, the target prompt, an editing loss."""
    return {
        "ckpt": node("CheckpointLoaderSimple", {"ckpt_name": CHECKPOINT}),
        "src": node("CLIPTextEncode", {"text": source}, {"clip": ("ckpt", 1)}, "source (the image as it is)"),
        "tgt": node("CLIPTextEncode", {"text": target}, {"clip": ("ckpt", 1)}, "target (the image as it should be)"),
        "neg": node("CLIPTextEncode", {"text": ""}, {"clip": ("ckpt", 1)}, "negative (empty = unconditional)"),
        "image": node("LoadImage", {"image": "example.png"}),
        "encode": node("VAEEncode", links={"pixels": ("image", 0), "vae": ("ckpt", 2)}),
        "loss": node(loss_type, widgets, {"model": ("ckpt", 0), "reference": (reference, 0), "source": ("src", 0),
                                          "target": ("tgt", 0), "negative": ("neg", 0)}),
    }


DDS = {"cfg": 7.5} | TIMESTEPS | {"t_min": 0.05, "t_max": 0.95}

BRIDGE_TARGET = ", detailed high resolution, high quality, sharp"
BRIDGE_SOURCE = ", oversaturated, smooth, pixelated, cartoon, foggy, hazy, blurry, bad structure, noisy, malformed"
SDI_NOISE = {"inversion_steps": 10, "inversion_cfg": -6.5, "eta": 0.3, "eta_placement": "every_step",
             "tau_jitter": True, "variant": "inverted", "refresh_every": 1}
PRIOR = {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0)}
COMPARED = {
    "SDS": ("DistillSDSLoss", {"cfg": 101.0} | TIMESTEPS | {"fixed_noise": False}, {}),
    "NFSD": ("DistillNFSDGuidance", {"cfg": 7.5, "threshold": 0.2} | TIMESTEPS, {"nfsd_negative": ("nfsdneg", 0)}),
    "SDI": ("DistillSDSLoss", {"cfg": 8.5} | TIMESTEPS | {"t_min": 0.2, "t_schedule": "linear_anneal",
                                                      "fixed_noise": False}, {"noise": ("noise", 0)}),
    "LMC-SDS": ("DistillSDSLoss", {"cfg": 8.0} | TIMESTEPS | {"fixed_noise": False}, {"corrector": ("corrector", 0)}),
    "CSD": ("DistillCSDLoss", {"scale": 1.0, "ramp": 0.5, "late_t_max": 0.5} | TIMESTEPS,
            {"csd_negative": ("nfsdneg", 0)}),
    "ISM": ("DistillISMLoss", {"cfg": 7.5, "delta_t": 0.08, "inversion_interval": 0.2} | TIMESTEPS | {"t_max": 0.5},
            {}),
    "SDS-Bridge": ("DistillSDSBridgeLoss", {"cfg": 40.0, "stage_two": 0.5} | TIMESTEPS,
                   {"bridge_target": ("btarget", 0), "bridge_source": ("bsource", 0)}),
    "ASD": ("DistillASDLoss", {"cfg": 7.5, "shift": 0.1} | TIMESTEPS, {}),
}
"""The compared losses at their own workflows' or authors' settings: node type, widgets, extra links."""


def comparison_nodes() -> dict:
    """Every loss of COMPARED from one empty latent and seed through the same Optimize Latent, the results joined
    side by side in latent space (two rows of four, in COMPARED's order) and decoded once as one grid."""
    graph = prompt_nodes() | {
        "nfsdneg": node("CLIPTextEncode", {"text": NFSD_NEGATIVE}, {"clip": ("ckpt", 1)}, "NFSD and CSD negative"),
        "btarget": node("CLIPTextEncode", {"text": PROMPT + BRIDGE_TARGET}, {"clip": ("ckpt", 1)},
                        "SDS-Bridge target (prompt + sharp)"),
        "bsource": node("CLIPTextEncode", {"text": PROMPT + BRIDGE_SOURCE}, {"clip": ("ckpt", 1)},
                        "SDS-Bridge source (prompt + blurry)"),
        "noise": node("DistillDDIMInvertNoise", SDI_NOISE),
        "corrector": node("DistillLMCCorrector", {"corrector_name": CORRECTOR}),
    } | EMPTY
    for i, (name, (type_, widgets, links)) in enumerate(COMPARED.items()):
        graph[f"loss{i}"] = node(type_, widgets, PRIOR | links, f"{name} loss")
        graph[f"opt{i}"] = node("DistillOptimizeLatent", {"steps": 500, "learning_rate": 0.1, "optimizer": "adamw",
                                                          "lr_schedule": "cosine", "seed": 0, "l2_to_init": 0.0},
                                {"latent": ("empty", 0), "loss": (f"loss{i}", 0)}, name)
    for row in (0, 4):
        previous = f"opt{row}"
        for i in range(row + 1, row + 4):
            graph[f"row{i}"] = node("LatentConcat", {"dim": "x"},
                                    {"samples1": (previous, 0), "samples2": (f"opt{i}", 0)},
                                    " | ".join(list(COMPARED)[row:i + 1]))
            previous = f"row{i}"
    graph["grid"] = node("LatentConcat", {"dim": "y"}, {"samples1": ("row3", 0), "samples2": ("row7", 0)}, "grid")
    graph["decode"] = node("VAEDecode", links={"samples": ("grid", 0), "vae": ("ckpt", 2)})
    graph["save"] = node("SaveImage", {"filename_prefix": "score_distillation/loss_comparison"},
                         {"images": ("decode", 0)}, "result")
    return graph


WORKFLOWS = {
    "sds_text_to_image": (
        "SDS text-to-image (DreamFusion). SDS Loss needs a high cfg: 101 in the standard form, DreamFusion's "
        "ω = 100 (it writes ε̂_c + ω·(ε̂_c − ε̂_u)). t is drawn "
        "uniformly in [0.02, 0.98] of the model's noise schedule every step. Expect smooth, saturated "
        "results: that is SDS. 500 steps of AdamW at lr 0.1, cosine-decayed. The loss plot shows the "
        "gradient's size per step.",
        prompt_nodes() | {
            "loss": node("DistillSDSLoss", {"cfg": 101.0} | TIMESTEPS | {"fixed_noise": False},
                         {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0)}),
        } | EMPTY | output_nodes("sds_text_to_image", 500, 0.1)),
    "nfsd_text_to_image": (
        "NFSD text-to-image (noise-free score distillation). The third prompt is the paper's NFSD "
        "negative; below threshold 0.2 of the schedule the domain direction is the unconditional "
        "prediction alone, above it the difference to that negative. cfg 7.5 is enough: no noise term "
        "needs drowning out. All three prompts go through one batched model call per step.",
        prompt_nodes() | {
            "nfsdneg": node("CLIPTextEncode", {"text": NFSD_NEGATIVE}, {"clip": ("ckpt", 1)}, "NFSD negative"),
            "loss": node("DistillNFSDGuidance", {"cfg": 7.5, "threshold": 0.2} | TIMESTEPS,
                         {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                          "nfsd_negative": ("nfsdneg", 0)}),
        } | EMPTY | output_nodes("nfsd_text_to_image", 500, 0.1)),
    "sdi_text_to_image": (
        "SDI text-to-image (score distillation via DDIM inversion), set up as SDI's reference code. DDIM-Invert "
        "Noise replaces SDS's random noise by noise inferred by inverting DDIM (10 steps, cfg -6.5 = the paper's "
        "-7.5) from the current latent; SDS Loss then runs at cfg 8.5 (the paper's 7.5; both in the standard "
        "form here) with t annealed linearly from 0.98 to 0.2 and weighting auto (= sdi, the DDIM step's own "
        "scale). Each step costs about 10·t + 3 model calls; refresh_every > 1 reuses the inferred noise.",
        prompt_nodes() | {
            "noise": node("DistillDDIMInvertNoise", {"inversion_steps": 10, "inversion_cfg": -6.5, "eta": 0.3,
                                                     "eta_placement": "every_step", "tau_jitter": True,
                                                     "variant": "inverted", "refresh_every": 1}),
            "loss": node("DistillSDSLoss", {"cfg": 8.5} | TIMESTEPS | {"t_min": 0.2, "t_schedule": "linear_anneal",
                                                                   "fixed_noise": False},
                         {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                          "noise": ("noise", 0)}),
        } | EMPTY | output_nodes("sdi_text_to_image", 500, 0.1)),
    "train_corrector": (
        "Train an LMC corrector for the loaded checkpoint. The spectral kind fits in seconds; unet trains the "
        "paper's small U-Net for `steps`. With no images and no folder the model samples its own latents; "
        "give a folder of photos like those you will optimize for a better fit. The file lands in "
        "models/lmc_correctors/ under `filename`; LMC workflows pick it with LMC Corrector.",
        {
            "ckpt": node("CheckpointLoaderSimple", {"ckpt_name": CHECKPOINT}),
            "neg": node("CLIPTextEncode", {"text": ""}, {"clip": ("ckpt", 1)}, "unconditional (empty prompt)"),
            "train": node("DistillTrainLMCCorrector", {
                "kind": "spectral", "filename": CORRECTOR, "pairs_per_latent": 64, "steps": 3000, "seed": 0,
                "folder": "", "image_size": 512, "overwrite": False},
                {"model": ("ckpt", 0), "unconditional": ("neg", 0), "vae": ("ckpt", 2)}),
            "fit": node("SaveImage", {"filename_prefix": "score_distillation/train_corrector_fit"},
                        {"images": ("train", 1)}, "corrector fit"),
        }),
    "lmc_sds_text_to_image": (
        "LMC-SDS text-to-image. The LMC Corrector models the denoiser's frequency bias, so SDS Loss with a "
        "corrector needs neither cfg 100 nor blurry results: cfg 8 as in the paper, weighting auto (= uniform "
        "for LMC-SDS). Make the corrector for your checkpoint first (train_corrector workflow or "
        "corrector_weights/make_corrector.py). fixed_noise on gives more diverse results across seeds.",
        prompt_nodes() | {
            "corrector": node("DistillLMCCorrector", {"corrector_name": CORRECTOR}),
            "loss": node("DistillSDSLoss", {"cfg": 8.0} | TIMESTEPS | {"fixed_noise": False},
                         {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                          "corrector": ("corrector", 0)}),
        } | EMPTY | output_nodes("lmc_sds_text_to_image", 500, 0.1)),
    "lmc_sds_latent_editing": (
        "LMC-SDS editing of a loaded image in latent space. The image is encoded with the checkpoint's VAE, "
        "then pulled towards the prompt (cfg 15, as the paper's editing) while l2_to_init 0.1 keeps it near "
        "the original; lr 0.02. Describe the edited image in the prompt.",
        prompt_nodes("a photograph of a cat wearing a red knitted hat") | {
            "image": node("LoadImage", {"image": "example.png"}),
            "encode": node("VAEEncode", links={"pixels": ("image", 0), "vae": ("ckpt", 2)}),
            "corrector": node("DistillLMCCorrector", {"corrector_name": CORRECTOR}),
            "loss": node("DistillSDSLoss", {"cfg": 15.0} | TIMESTEPS | {"fixed_noise": False},
                         {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                          "corrector": ("corrector", 0)}),
        } | output_nodes("lmc_sds_latent_editing", 300, 0.02, start="encode", l2_to_init=0.1)),
    "image_editing": (
        "Pixel-space editing with Optimize Image (LMC-SDS's editing setup): the photo is encoded through the "
        "VAE with gradients every step, whole image at the model's native size for 200 steps, then 2 random "
        "native-size patches per step, so any image size works. l2_to_init 0.1 keeps it close to the "
        "original, lr 0.02 decays to 0.005. The loss is SDS at cfg 15 with an LMC corrector; without one, "
        "disconnect it and raise cfg (SDS needs ~100).",
        prompt_nodes("a photograph of a cat wearing a red knitted hat") | {
            "image": node("LoadImage", {"image": "example.png"}),
            "corrector": node("DistillLMCCorrector", {"corrector_name": CORRECTOR}),
            "loss": node("DistillSDSLoss", {"cfg": 15.0} | TIMESTEPS | {"fixed_noise": False},
                         {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                          "corrector": ("corrector", 0)}),
            "opt": node("DistillOptimizeImage", {
                "start": "image", "width": 512, "height": 512, "steps": 500, "learning_rate": 0.02, "lr_end": 0.005,
                "seed": 0, "l2_to_init": 0.1, "whole_image_steps": 200, "patches": 2, "native_size": 512},
                {"vae": ("ckpt", 2), "loss": ("loss", 0), "image": ("image", 0)}),
        } | saved("image_editing", ("opt", 0), ("opt", 1))),
    "dds_editing": (
        "DDS editing (Delta Denoising Score) of a loaded image in latent space. The source prompt describes the "
        "image as it is, the target prompt as it should be; each step compares the target's guidance at the edited "
        "latent with the source's at the original, both noised alike, so what the prompts share stays put. The DDS "
        "notebook's settings: cfg 7.5, t in [0.05, 0.95], weighting auto (= uniform, w = 1); 200 steps of plain SGD "
        "at lr 0.1 on its loss 2000·Σ(z·g)/(H·W), which leaves alone what the prompts share (Adam would step it).",
        editing_nodes("DistillDDSLoss", DDS) | output_nodes("dds_editing", 200, 0.1, start="encode", optimizer="sgd",
                                                            lr_schedule="constant")),
    "pds_editing": (
        "PDS editing (Posterior Distillation Sampling) of a loaded image in latent space: matches the noise a "
        "denoising step would need for the edited latent under the target prompt to the original's under the source "
        "prompt, which pulls the edit back towards the original. The authors' 2D notebook: cfg 50, t in [0.02, 0.98], "
        "no weighting (auto = uniform), 500 steps at a constant lr 0.1 of Adam at PyTorch's betas and eps (adam_torch: "
        "the notebook's AdamW without its weight decay, which shrinks the latent by 0.1% a step even where nothing "
        "is to change). Then the notebook's SDEdit refinement at cfg 15: KSampler re-noises the edit to t = 101 of "
        "a 20-step DDIM schedule and runs its last 3 steps under the target prompt (ddim, ddim_uniform, steps 3, "
        "denoise 0.15 = 3/20); the notebook pulls the latent 50 AdamW steps toward such passes (2 to 4 steps, fresh "
        "noise each), the graph takes one. Both results are saved: before and after the refinement.",
        editing_nodes("DistillPDSLoss", {"cfg": 50.0} | TIMESTEPS)
        | output_nodes("pds_editing", 500, 0.1, start="encode", optimizer="adam_torch", lr_schedule="constant")
        | sdedit_nodes("pds_editing")),
    "masked_editing": (
        "Masked editing: only the painted region changes. Paint it on Load Image (right-click, Open in MaskEditor); "
        "Set Latent Noise Mask puts the mask on the latent, which Optimize Latent honours as KSampler does (resized "
        "to the latent, soft edges partly): outside the mask the latent stays the original's exactly (the decoded image "
        "only goes through the VAE). The loss is DDS (cfg 7.5); 200 steps of AdamW at lr 0.02. For pixel-exact edges, "
        "use Optimize Image with the same mask.",
        editing_nodes("DistillDDSLoss", DDS, target="a photograph of a cat wearing a red knitted hat",
                      reference="masked") | {
            "masked": node("SetLatentNoiseMask", links={"samples": ("encode", 0), "mask": ("image", 1)}),
        } | output_nodes("masked_editing", 200, 0.02, start="masked")),
    "text_to_3d": (
        "Text-to-3D (DreamFusion's SDS on a voxel grid, pure PyTorch). Every step renders a 64x64 view from a random "
        "camera (threestudio's ranges: elevation -10 to 45, distance 1.5 to 2, fovy 40 to 70), resizes it to 512 "
        "and encodes it with the VAE; SDS at cfg 101 pulls it towards the prompt. 3D View Prompts gives each camera "
        "'PROMPT, front view' (side, back, overhead) against the multi-face problem. VoxelToMesh turns the grid's "
        "opacity into a mesh that Save GLB shows in ComfyUI's 3D viewer; the turntable is saved as an animated WebP. "
        "1000 steps of Adam at lr 0.05; raise grid for detail, cameras_per_step for smoother gradients.",
        {
            "ckpt": node("CheckpointLoaderSimple", {"ckpt_name": CHECKPOINT}),
            "views": node("Distill3DViewPrompts", {"prompt": "a DSLR photo of a corgi puppy"}, {"clip": ("ckpt", 1)},
                          "view prompts"),
            "neg": node("CLIPTextEncode", {"text": ""}, {"clip": ("ckpt", 1)}, "negative (empty = unconditional)"),
            "loss": node("DistillSDSLoss", {"cfg": 101.0} | TIMESTEPS | {"fixed_noise": False},
                         {"model": ("ckpt", 0), "positive": ("views", 1), "negative": ("neg", 0)}),
            "opt": node("DistillOptimize3D", {
                "steps": 1000, "learning_rate": 0.05, "render_size": 64, "grid": 32, "samples_per_ray": 64,
                "cameras_per_step": 1, "native_size": 512, "seed": 0, "elevation_min": -10.0, "elevation_max": 45.0,
                "distance_min": 1.5, "distance_max": 2.0, "fovy_min": 40.0, "fovy_max": 70.0, "turntable_frames": 24,
                "turntable_size": 256, "turntable_elevation": 15.0},
                {"vae": ("ckpt", 2), "loss": ("loss", 0), "views": ("views", 0)}),
            "mesh": node("VoxelToMesh", {"algorithm": "surface net", "threshold": 0.5}, {"voxel": ("opt", 0)}),
            "glb": node("SaveGLB", {"filename_prefix": "score_distillation/text_to_3d"}, {"mesh": ("mesh", 0)},
                        "mesh (3D viewer)", last=True),
            "turntable": node("SaveAnimatedWEBP", {"filename_prefix": "score_distillation/text_to_3d_turntable",
                                                   "fps": 12.0, "lossless": False, "quality": 90, "method": "default"},
                              {"images": ("opt", 1)}, "turntable"),
            "plot": node("SaveImage", {"filename_prefix": "score_distillation/text_to_3d_loss_plot"},
                         {"images": ("opt", 2)}, "loss plot"),
        }),
    "loss_comparison": (
        "The same prompt and seed through SDS, NFSD, SDI, LMC-SDS (top row) and CSD, ISM, SDS-Bridge, ASD (bottom "
        "row), side by side in one grid. Each loss runs at its own workflow's or its authors' settings (SDS cfg 101; "
        "NFSD 7.5 with its negative; SDI 8.5 with DDIM-Invert Noise, t 0.98 → 0.2; LMC-SDS 8 with the corrector of "
        "train_corrector; CSD scale 1, the empty prompt giving way to the negative prompt (NFSD's here) over the "
        "first half; ISM 7.5, t ≤ 0.5; SDS-Bridge 40, bridging from step 250; ASD 7.5) through the same Optimize "
        "Latent: 500 steps of AdamW at lr 0.1, cosine, seed 0, from one empty latent. The eight latents are joined "
        "with Latent Concat and decoded once. SDI and ISM cost several model calls a step.",
        comparison_nodes()),
}


CROWDED = {"loss_comparison"}
"""Workflows whose wires cannot all clear the nodes (eight losses fan out from one prior): laid out without it."""
PLACED = {"pds_editing": {"tgt": 0, "neg": 170, "encode": 340, "image": 210, "ckpt": 618, "src": 722, "loss": 672,
                          "opt": 612, "refine": 0, "decode": 322, "decode_refined": 450, "save_refined": 0, "save": 392,
                          "plot": 782}}
"""Workflows whose wires stacked columns cannot clear, placed by hand: each node's height below its group's first
row (columns as computed). In pds_editing the refinement's wires from the checkpoint and the prompts cross the loss's
and the optimizer's columns, which therefore sit below them; clear_wires checks the placement as any other."""


def api_format(graph: dict) -> dict:
    ids = node_ids(graph)
    out = {}
    for key, n in graph.items():
        inputs = dict(n["widgets"]) | {name: [str(ids[src]), slot] for name, (src, slot) in n["links"].items()}
        meta = {"_meta": {"title": n["title"]}} if n["title"] else {}
        out[str(ids[key])] = {"class_type": n["type"], "inputs": inputs} | meta
    return out


def node_ids(graph: dict) -> dict[str, int]:
    """The id of every node in both formats: 1 is the UI format's note, the graph's nodes follow in order."""
    return {key: i + 2 for i, key in enumerate(graph)}


def ui_widgets(n: dict) -> list:
    """widgets_values as the frontend saves them: a control value after every seed that has one, then
    the values of widgets that exist only in the frontend."""
    values = []
    for name, value in n["widgets"].items():
        values.append(value)
        if name in SEEDS and n["type"] not in SEED_WITHOUT_CONTROL:
            values.append("fixed")
    return values + UI_ONLY_WIDGETS.get(n["type"], [])


def min_size(n: dict) -> tuple[int, int]:
    """The smallest box the frontend draws the node in: the measured table, else its rule for plain widgets."""
    if n["type"] in MIN_SIZE:
        return MIN_SIZE[n["type"]]
    link_inputs, outputs = IO[n["type"]]
    widgets = len(ui_widgets(n))
    slots = SLOTS_TOP + SLOT * max(len(link_inputs), len(outputs))
    return 210, slots + (WIDGET * widgets + WIDGETS_BOTTOM if widgets else 0)


def size(n: dict) -> tuple[int, int]:
    (w, h), (room_w, room_h) = min_size(n), ROOM.get(n["type"], (WIDTH if n["widgets"] else NARROW, 0))
    return max(w, room_w), max(h, room_h)


def roles(graph: dict) -> dict[str, str]:
    """Each node's group. By what it outputs: the model, its conditioning and loaded images are the prior;
    losses and their parts the loss; the optimizer with what it starts from is optimize; what follows it, output.
    A node feeding an earlier group joins that group, so that every wire runs rightwards."""
    downstream = {key: False for key in graph}
    for key in topological(graph):
        downstream[key] = any(graph[src]["type"] in OPTIMIZERS or downstream[src]
                              for src, _ in graph[key]["links"].values())
    role = {}
    for key, n in graph.items():
        outputs = {type_ for _, type_ in IO[n["type"]][1]}
        role[key] = ("optimize" if n["type"] in OPTIMIZERS
                     else "prior" if outputs & PRIOR_OUTPUTS or n["type"] in INPUT_IMAGES
                     else "loss" if outputs & LOSS_OUTPUTS else "output" if downstream[key] else "optimize")
    order = list(GROUPS)
    for key in reversed(topological(graph)):
        for src, _ in graph[key]["links"].values():
            if order.index(role[src]) > order.index(role[key]):
                role[src] = role[key]
    return role


def topological(graph: dict) -> list[str]:
    done: list[str] = []

    def visit(key):
        if key not in done:
            for src, _ in graph[key]["links"].values():
                visit(src)
            done.append(key)

    for key in graph:
        visit(key)
    return done


def columns(graph: dict, members: list[str]) -> dict[str, int]:
    """Column of each node inside its group: one more than its latest input from the group. A node with no
    input from the group sits just left of its first consumer there. A node whose outputs all leave the group
    sits in its last column, so that its wires pass under no node of the group, but a node with no inputs at
    all (a loaded image) starts the group, where a person looks for what the workflow starts from."""
    inside = set(members)
    column = {}
    for key in topological(graph):
        if key in inside:
            column[key] = 1 + max((column[src] for src, _ in graph[key]["links"].values() if src in inside), default=-1)
    last = max(column.values())
    for key in reversed(topological(graph)):
        if key in inside and not any(src in inside for src, _ in graph[key]["links"].values()):
            consumers = [column[k] for k in members if any(src == key for src, _ in graph[k]["links"].values())]
            column[key] = min(consumers) - 1 if consumers else last
    for key in members:
        if not any(src == key for k in members for src, _ in graph[k]["links"].values()):
            column[key] = last if graph[key]["links"] else 0
    return column


def layout(graph: dict, note: dict, clear: bool = True, placed: dict | None = None
           ) -> tuple[dict[str, list[int]], list[dict], dict]:
    """Positions of every node, the groups around them, and the view the workflow opens at; ``clear``: with no wire
    under a node; ``placed``: each node's height below its group's first row, instead of stacking its column."""
    role = roles(graph)
    top = note_height(note["widgets"]["text"]) + TITLE + GROUP_GAP
    pos, stacks, spans = {}, [], []
    x = 0
    for name in GROUPS:
        members = [key for key in graph if role[key] == name]
        if not members:
            continue
        column = columns(graph, members)
        x_col = x + PAD
        for c in sorted(set(column.values())):
            stack = sorted((k for k in members if column[k] == c),
                           key=lambda k: (graph[k]["last"], -reach(graph, k, role), barycenter(graph, k, pos)))
            first_row = y = top + GROUP_TITLE + TITLE
            if placed:
                stack.sort(key=placed.get)
            for key in stack:
                pos[key] = [x_col, first_row + placed[key] if placed else y]
                y += size(graph[key])[1] + TITLE + ROW_GAP
            stacks.append(stack)
            x_col += max(size(graph[k])[0] for k in stack) + COLUMN_GAP
        spans.append((name, members, x, x_col - COLUMN_GAP + PAD))
        x = x_col - COLUMN_GAP + PAD + GROUP_GAP
    if clear:
        clear_wires(graph, pos, stacks)
    groups = []
    for i, (name, members, left, right) in enumerate(spans):
        bottom = max(pos[k][1] + size(graph[k])[1] for k in members) + PAD
        groups.append({"id": i + 1, "title": name, "bounding": [left, top, right - left, bottom - top],
                       "color": GROUPS[name], "font_size": 24, "flags": {}})
    pos["note"] = [0, 0]
    view = {"ds": {"scale": 1, "offset": [VIEW_MARGIN[0], VIEW_MARGIN[1] + TITLE]}}
    return pos, groups, view


def reach(graph: dict, key: str, role: dict) -> int:
    """The furthest group the node feeds, through the nodes of its own group: a column stacks those first, so
    that long wires run along the top."""
    consumers = [k for k, n in graph.items() if any(src == key for src, _ in n["links"].values())]
    return max((reach(graph, k, role) if role[k] == role[key] else list(GROUPS).index(role[k]) for k in consumers),
               default=list(GROUPS).index(role[key]))


def barycenter(graph: dict, key: str, pos: dict) -> float:
    """Mean height of the output slots feeding the node, for ordering a column so that wires cross less."""
    ys = [pos[src][1] + SLOT * slot for src, slot in graph[key]["links"].values() if src in pos]
    return sum(ys) / len(ys) if ys else float("inf")


def wire(graph: dict, pos: dict, src: str, slot: int, dst: str, name: str, samples: int = 48) -> list[tuple]:
    """Points along a link as the frontend draws it: a cubic spline leaving the output slot rightwards and
    entering the input slot from the left, its handles a quarter of the distance long."""
    x0, y0 = pos[src][0] + size(graph[src])[0], pos[src][1] + SLOT * (slot + 0.7)
    x1, y1 = pos[dst][0], pos[dst][1] + SLOT * ([i for i, _ in IO[graph[dst]["type"]][0]].index(name) + 0.7)
    handle = 0.25 * ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
    xs, ys = (x0, x0 + handle, x1 - handle, x1), (y0, y0, y1, y1)
    return [tuple(sum(c * b for c, b in zip(coords, ((1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3)))
                  for coords in (xs, ys)) for t in (i / samples for i in range(samples + 1))]


def clear_wires(graph: dict, pos: dict, stacks: list[list[str]], rounds: int = 200) -> None:
    """Move nodes down their column until no wire runs under a node it does not connect to."""
    for _ in range(rounds):
        blocked = first_under_a_wire(graph, pos, stacks)
        if blocked is None:
            return
        stack, i, lowest = blocked
        shift = round(lowest + WIRE_MARGIN + TITLE + 1 - pos[stack[i]][1])
        for key in stack[i:]:
            pos[key][1] += shift
    raise RuntimeError("workflow layout: wires still run under nodes; reorder the description")


def first_under_a_wire(graph: dict, pos: dict, stacks: list[list[str]]) -> tuple[list[str], int, float] | None:
    """The column and index of the first node (title bar included) that a wire of other nodes crosses, and
    the lowest point of those wires over it; None when no wire crosses a node."""
    lines = [(src, key, wire(graph, pos, src, slot, key, name))
             for key, n in graph.items() for name, (src, slot) in n["links"].items()]
    for stack in stacks:
        for i, key in enumerate(stack):
            (x, y), (w, h) = pos[key], size(graph[key])
            under = [py for src, dst, line in lines if key not in (src, dst) for px, py in line
                     if x <= px <= x + w and y - TITLE - WIRE_MARGIN <= py <= y + h + WIRE_MARGIN]
            if under:
                return stack, i, max(under)
    return None


def note_height(text: str) -> int:
    """Tall enough to show all of the note's text, wrapped at word ends as the browser does, and a line more."""
    chars = (NOTE_WIDTH - NOTE_PADDING) // NOTE_CHAR[0]
    lines = sum(len(textwrap.wrap(paragraph, chars)) or 1 for paragraph in text.split("\n")) + 1
    return max(lines * NOTE_CHAR[1] + NOTE_PADDING, MIN_SIZE["Note"][1])


def ui_format(note: str, graph: dict, clear: bool = True, placed: dict | None = None) -> dict:
    ids = node_ids(graph) | {"note": 1}
    note_node = node("Note", {"text": note}, title="About this workflow")
    pos, groups, view = layout(graph, note_node, clear, placed)
    graph = {"note": note_node} | graph
    links, nodes = [], []
    outgoing: dict[tuple[str, int], list[int]] = {}
    for key, n in graph.items():
        for name, (src, slot) in n["links"].items():
            link_id = len(links) + 1
            to_slot = [i for i, _ in IO[n["type"]][0]].index(name)
            links.append([link_id, ids[src], slot, ids[key], to_slot, IO[graph[src]["type"]][1][slot][1]])
            outgoing.setdefault((src, slot), []).append(link_id)
    for order, key in enumerate(sorted(graph, key=ids.get)):
        n = graph[key]
        link_inputs, outputs = IO[n["type"]]
        link_of = {link_inputs[slot][0]: lid for lid, _, _, to, slot, _ in links if to == ids[key]}
        box = [NOTE_WIDTH, note_height(note)] if key == "note" else list(size(n))
        nodes.append({
            "id": ids[key], "type": n["type"], "pos": pos[key], "size": box, "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": name, "type": type_, "link": link_of.get(name)} for name, type_ in link_inputs],
            "outputs": [{"name": name, "type": type_, "links": outgoing.get((key, slot), []), "slot_index": slot}
                        for slot, (name, type_) in enumerate(outputs)],
            "properties": {"Node name for S&R": n["type"]},
            "widgets_values": ui_widgets(n),
        } | ({"title": n["title"]} if n["title"] else {}))
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": groups, "config": {}, "extra": view, "version": 0.4}


def write(folder: Path = HERE) -> None:
    (folder / "api").mkdir(parents=True, exist_ok=True)
    for name, (note, graph) in WORKFLOWS.items():
        ui = ui_format(note, graph, name not in CROWDED, PLACED.get(name))
        (folder / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (folder / "api" / f"{name}.json").write_text(json.dumps(api_format(graph), indent=1) + "\n")


def main():
    write()
    print(f"wrote {', '.join(WORKFLOWS)} to example_workflows/ (UI) and example_workflows/api/ (API)")


if __name__ == "__main__":
    main()
