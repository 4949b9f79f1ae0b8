"""Writes every shipped workflow twice from one description: UI format (workflows/NAME.json, drag and
drop, listed in ComfyUI's template browser) and API format (workflows/api/NAME.json, POST /prompt).

    python workflows/build.py
"""
import json
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
    "DistillOptimizeImage": ([("vae", "VAE"), ("loss", "DISTILL_LOSS"), ("image", "IMAGE")],
                             [("image", "IMAGE"), ("loss_plot", "IMAGE")]),
    "DistillTrainLMCCorrector": ([("model", "MODEL"), ("unconditional", "CONDITIONING"), ("images", "IMAGE"),
                                  ("vae", "VAE")], [("corrector", "LMC_CORRECTOR"), ("loss_curve", "IMAGE")]),
    "DistillNFSDGuidance": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                             ("nfsd_negative", "CONDITIONING")], [("loss", "DISTILL_LOSS")]),
    "DistillDDIMInvertNoise": ([], [("noise", "DISTILL_NOISE")]),
    "DistillOptimizeLatent": ([("latent", "LATENT"), ("loss", "DISTILL_LOSS")],
                              [("latent", "LATENT"), ("loss_plot", "IMAGE")]),
}
SEEDED = {"DistillOptimizeLatent": "seed", "DistillOptimizeImage": "seed"}  # a seed widget adds a control_after_generate value in UI format
TIMESTEPS = {"weighting": "auto", "t_min": 0.02, "t_max": 0.98, "t_schedule": "uniform", "grad_clip": 0.0}
CORRECTOR = "v1-5-pruned-emaonly_spectral.safetensors"  # what corrector_weights/make_corrector.py names it


def node(type_, widgets=None, links=None, title=None):
    return {"type": type_, "widgets": dict(widgets or {}), "links": dict(links or {}), "title": title}


def prompt_nodes(prompt=PROMPT):
    return {
        "ckpt": node("CheckpointLoaderSimple", {"ckpt_name": CHECKPOINT}),
        "pos": node("CLIPTextEncode", {"text": prompt}, {"clip": ("ckpt", 1)}, "positive"),
        "neg": node("CLIPTextEncode", {"text": ""}, {"clip": ("ckpt", 1)}, "negative (empty = unconditional)"),
    }


EMPTY = {"empty": node("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1})}


def output_nodes(steps, lr, start="empty", **settings):
    return {
        "opt": node("DistillOptimizeLatent", {"steps": steps, "learning_rate": lr, "optimizer": "adamw",
                                              "lr_schedule": "cosine", "seed": 0, "l2_to_init": 0.0} | settings,
                    {"latent": (start, 0), "loss": ("loss", 0)}),
        "decode": node("VAEDecode", links={"samples": ("opt", 0), "vae": ("ckpt", 2)}),
        "save": node("SaveImage", {"filename_prefix": "score_distillation"}, {"images": ("decode", 0)}),
        "plot": node("PreviewImage", links={"images": ("opt", 1)}, title="loss plot"),
    }


WORKFLOWS = {
    "sds_text_to_image": (
        "SDS text-to-image (DreamFusion). SDS Loss needs a high cfg: 100 in the standard form. t is drawn "
        "uniformly in [0.02, 0.98] of the model's noise schedule every step. Expect smooth, saturated "
        "results: that is SDS. 500 steps of AdamW at lr 0.1, cosine-decayed. The loss plot shows the "
        "gradient's size per step.",
        prompt_nodes() | {
            "loss": node("DistillSDSLoss", {"cfg": 100.0} | TIMESTEPS | {"fixed_noise": False},
                         {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0)}),
        } | EMPTY | output_nodes(500, 0.1)),
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
        } | EMPTY | output_nodes(500, 0.1)),
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
        } | EMPTY | output_nodes(500, 0.1)),
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
        } | EMPTY | output_nodes(500, 0.1)),
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
        } | output_nodes(300, 0.02, start="encode", l2_to_init=0.1)),
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
            "save": node("SaveImage", {"filename_prefix": "score_distillation_edit"}, {"images": ("opt", 0)}),
            "plot": node("PreviewImage", links={"images": ("opt", 1)}, title="loss plot"),
        }),
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
            "curve": node("PreviewImage", links={"images": ("train", 1)}, title="loss curve"),
        }),
}


def api_format(graph: dict) -> dict:
    ids = {key: str(i) for i, key in enumerate(k for k, n in graph.items() if n["type"] != "Note")}
    out = {}
    for key, n in graph.items():
        if n["type"] == "Note":
            continue
        inputs = dict(n["widgets"]) | {name: [ids[src], slot] for name, (src, slot) in n["links"].items()}
        out[ids[key]] = {"class_type": n["type"], "inputs": inputs} | ({"_meta": {"title": n["title"]}} if n["title"] else {})
    return out


def ui_format(note: str, graph: dict) -> dict:
    graph = {"note": node("Note", {"text": note}, title="About this workflow")} | graph
    ids = {key: i + 1 for i, key in enumerate(graph)}
    links, nodes = [], []
    outgoing: dict[tuple[str, int], list[int]] = {}
    for key, n in graph.items():
        for name, (src, slot) in n["links"].items():
            link_id = len(links) + 1
            to_slot = [i for i, _ in IO[n["type"]][0]].index(name)
            links.append([link_id, ids[src], slot, ids[key], to_slot, IO[graph[src]["type"]][1][slot][1]])
            outgoing.setdefault((src, slot), []).append(link_id)
    for order, (key, n) in enumerate(graph.items()):
        link_inputs, outputs = IO[n["type"]]
        link_of = {link_inputs[slot][0]: lid for lid, _, _, to, slot, _ in links if to == ids[key]}
        widgets = list(n["widgets"].values())
        if n["type"] in SEEDED:
            pos = list(n["widgets"]).index(SEEDED[n["type"]]) + 1
            widgets.insert(pos, "fixed")
        column = order % 4
        nodes.append({
            "id": ids[key], "type": n["type"], "pos": [40 + 380 * column, 40 + 260 * (order // 4)],
            "size": [340, 220], "flags": {}, "order": order, "mode": 0,
            "inputs": [{"name": name, "type": type_, "link": link_of.get(name)} for name, type_ in link_inputs],
            "outputs": [{"name": name, "type": type_, "links": outgoing.get((key, slot), []), "slot_index": slot}
                        for slot, (name, type_) in enumerate(outputs)],
            "properties": {"Node name for S&R": n["type"]},
            "widgets_values": widgets,
        } | ({"title": n["title"]} if n["title"] else {}))
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def write(folder: Path = HERE) -> None:
    (folder / "api").mkdir(parents=True, exist_ok=True)
    for name, (note, graph) in WORKFLOWS.items():
        (folder / f"{name}.json").write_text(json.dumps(ui_format(note, graph), indent=1) + "\n")
        (folder / "api" / f"{name}.json").write_text(json.dumps(api_format(graph), indent=1) + "\n")


def main():
    write()
    print(f"wrote {', '.join(WORKFLOWS)} to workflows/ (UI) and workflows/api/ (API)")


if __name__ == "__main__":
    main()
