"""A real ComfyUI in this process, the pack loaded from custom_nodes, and tiny random models.

ComfyUI is found through COMFYUI_PATH, else the pack's grandparent folder when the pack sits in
ComfyUI/custom_nodes/, else ../shared/ComfyUI beside the repository, else ~/comfy/ComfyUI (comfy-cli's default).
"""
import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import torch

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "score_distillation"


def find_comfyui(pack_root: Path = PACK_ROOT) -> Path | None:
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]))
    if pack_root.parent.name == "custom_nodes":
        candidates.append(pack_root.parent.parent)
    candidates.append(pack_root.parent / "shared" / "ComfyUI")
    candidates.append(Path.home() / "comfy" / "ComfyUI")
    for c in candidates:
        if (c / "main.py").is_file() and (c / "comfy" / "samplers.py").is_file():
            return c.resolve()
    return None


COMFYUI = find_comfyui()
SKIP_REASON = (
    "NO COMFYUI FOUND: set COMFYUI_PATH, install the pack in ComfyUI/custom_nodes, or put ComfyUI at "
    "../shared/ComfyUI or ~/comfy/ComfyUI — the ComfyUI integration tests did not run"
)
IN_CI = bool(os.environ.get("CI"))
"""Under CI a missing ComfyUI fails the ComfyUI tests instead of skipping them."""


def custom_nodes_dir() -> Path:
    """A custom_nodes folder holding only this pack (a symlink named PACK_NAME)."""
    d = Path(tempfile.mkdtemp(prefix="distill_custom_nodes_"))
    (d / PACK_NAME).symlink_to(PACK_ROOT, target_is_directory=True)
    return d


def load_comfyui(cpu: bool = True):
    """Import ComfyUI (on CPU unless told otherwise) and load the pack through its custom-node loader."""
    if str(COMFYUI) not in sys.path:
        sys.path.insert(0, str(COMFYUI))
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    comfy.cli_args.args.preview_method = comfy.cli_args.LatentPreviewMethod.Latent2RGB
    import nodes

    if "DistillSDSLoss" not in nodes.NODE_CLASS_MAPPINGS:
        ok = asyncio.run(nodes.load_custom_node(str(custom_nodes_dir() / PACK_NAME)))
        assert ok, "ComfyUI could not load the pack from custom_nodes"
    return nodes


UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32,
    "num_res_blocks": [1, 1], "transformer_depth": [1, 1], "channel_mult": [1, 2],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 64,
    "num_heads": 2, "transformer_depth_output": [1, 1, 1, 1], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
CONTEXT_DIM = 64


def tiny_model(kind: str = "eps", seed: int = 0, unet: dict = UNET, dtype: torch.dtype = torch.float32):
    """A ModelPatcher around a randomly initialised SD1.5-family UNet (by default 32 channels, 2 levels).

    kind: "eps", "v" (v-prediction), "flow" (CONST with ModelSamplingDiscreteFlow, shift 3), or "sd3":
    flow on SD3's 16-channel latent format (the UNet stands in for the MMDiT). dtype: of the weights;
    float16 computes in float32 through ComfyUI's manual_cast ops, as on a device without fp16.
    """
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    import comfy.latent_formats

    model_type = {"eps": comfy.model_base.ModelType.EPS, "v": comfy.model_base.ModelType.V_PREDICTION,
                  "flow": comfy.model_base.ModelType.FLOW, "sd3": comfy.model_base.ModelType.FLOW}[kind]
    if kind == "sd3":
        unet = unet | {"in_channels": 16, "out_channels": 16}
    config = comfy.supported_models.SD15(dict(unet, dtype=dtype))
    if kind in ("flow", "sd3"):
        config.sampling_settings = {"shift": 3.0, "multiplier": 1000}
    if kind == "sd3":
        config.latent_format = comfy.latent_formats.SD3()
    config.set_inference_dtype(dtype, None if dtype == torch.float32 else torch.float32)
    model = comfy.model_base.BaseModel(config, model_type=model_type, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                            offload_device=torch.device("cpu"))


def conditioning(seed: int, tokens: int = 7, width: int = CONTEXT_DIM):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, width, generator=g), {}]]


def run_node(node_id: str, **inputs):
    """Execute a pack node as ComfyUI does: inside inference mode, through the class's execute."""
    import nodes

    with torch.inference_mode():
        return nodes.NODE_CLASS_MAPPINGS[node_id].execute(**inputs)


class Server:
    """`python main.py --cpu` on a free loopback port, stopped on exit. Its base directory is `tmp`
    (models/, input/, output/, temp/, custom_nodes/ with the pack and the test nodes); `env` adds to its
    environment."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None):
        import socket
        import subprocess

        self.base = tmp
        custom = tmp / "custom_nodes"
        custom.mkdir(exist_ok=True)
        for folder in ("input", "output"):
            (tmp / folder).mkdir(exist_ok=True)
        (custom / PACK_NAME).symlink_to(PACK_ROOT, target_is_directory=True)
        (custom / "distill_test_nodes").symlink_to(PACK_ROOT / "tests" / "comfy_test_nodes", target_is_directory=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.log_path = tmp / "server.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(tmp), "--database-url", "sqlite:///:memory:",
             "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_NAME, "distill_test_nodes",
             "--preview-method", "latent2rgb"],
            cwd=COMFYUI, stdout=self.log, stderr=subprocess.STDOUT, env=os.environ | (env or {}),
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 300.0):  # a shared 2-core machine can take minutes
        import time

        import requests

        start = time.time()
        while time.time() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early:\n{self.log_path.read_text()[-4000:]}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.proc.kill()  # not left running behind the error
        raise RuntimeError(f"ComfyUI did not start in {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def get(self, path: str):
        import requests

        return requests.get(self.url + path, timeout=30)

    def post(self, path: str, payload: dict):
        import requests

        return requests.post(self.url + path, json=payload, timeout=30)

    def queue(self, prompt: dict) -> str:
        r = self.post("/prompt", {"prompt": prompt})
        assert r.ok, r.text
        return r.json()["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """The prompt's history entry once it has finished (success, error or interrupted)."""
        import time

        start = time.time()
        while time.time() - start < timeout:
            entry = self.get(f"/history/{prompt_id}").json().get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run_prompt(self, prompt: dict, timeout: float = 300.0) -> dict:
        """POST a prompt and return its history entry once it has finished."""
        return self.wait(self.queue(prompt), timeout)

    def running(self) -> list[str]:
        return [item[1] for item in self.get("/queue").json()["queue_running"]]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except Exception:
            self.proc.kill()
        self.log.close()


def tiny_sds_prompt(steps=4, t_min=0.02, t_max=0.98) -> dict:
    """An API prompt: the test nodes' tiny model and conditioning, SDS Loss, Optimize Latent, saved outputs."""
    return {
        "1": {"class_type": "DistillTestTinyModel", "inputs": {"kind": "eps", "seed": 0}},
        "2": {"class_type": "DistillTestConditioning", "inputs": {"seed": 1}},
        "3": {"class_type": "DistillTestConditioning", "inputs": {"seed": 2}},
        "4": {"class_type": "DistillSDSLoss", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 100.0, "weighting": "sds",
            "t_min": t_min, "t_max": t_max, "t_schedule": "uniform", "grad_clip": 0.0}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "6": {"class_type": "DistillOptimizeLatent", "inputs": {
            "latent": ["5", 0], "loss": ["4", 0], "steps": steps, "learning_rate": 0.1, "optimizer": "adamw",
            "lr_schedule": "cosine", "seed": 0, "l2_to_init": 0.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "distill/sds"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["6", 1], "filename_prefix": "distill/plot"}},
    }


def pack(submodule: str):
    """A module of the pack as ComfyUI loaded it, e.g. pack("nodes.evaluation") or pack("distill")."""
    import importlib

    import nodes

    root = nodes.NODE_CLASS_MAPPINGS["DistillSDSLoss"].__module__.rsplit(".nodes.", 1)[0]
    return importlib.import_module(f"{root}.{submodule}")


# SD1.5 detection needs 320 channels and context 768; attention only at the second level keeps a 512×512
# step on CPU near 2 s (4.6× faster than attention at full latent resolution).
TINY_SD15_UNET = UNET | {"model_channels": 320, "context_dim": 768, "num_heads": 8, "channel_mult": [1, 1],
                         "num_res_blocks": [1, 1], "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1]}


def tiny_checkpoint(path: Path, seed: int = 0) -> None:
    """An SD1.5-format checkpoint file that CheckpointLoaderSimple accepts, with random fp16 weights:
    a two-level 320-channel UNet (37M parameters), a full-size CLIP-L and the SD VAE (244M parameters in
    all, 488 MB)."""
    import comfy.model_base
    import comfy.sd1_clip
    import comfy.supported_models
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from safetensors.torch import save_file

    config = comfy.supported_models.SD15(dict(TINY_SD15_UNET, dtype=torch.float32))
    config.set_inference_dtype(torch.float32, None)
    unet = comfy.model_base.BaseModel(config, device=torch.device("cpu")).diffusion_model
    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float32)
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    shapes = ({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
              | {f"cond_stage_model.{k.removeprefix('clip_l.')}": v for k, v in clip.state_dict().items()}
              | {f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    g = torch.Generator().manual_seed(seed)
    weights = {k: (torch.randn(v.shape, generator=g) * 0.02).half() if v.is_floating_point() else v.contiguous()
               for k, v in shapes.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(path))


def tiny_vae(seed: int = 0, taesd: bool = False, channels: int = 4):
    """comfy.sd.VAE around a random small AutoencoderKL (ch 32, ch_mult 1-1-2-2, 1 res block), or TAESD."""
    import comfy.sd

    g = torch.Generator().manual_seed(seed)
    if taesd:
        import comfy.taesd.taesd

        sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in comfy.taesd.taesd.TAESD().state_dict().items()}
        return comfy.sd.VAE(sd=sd)
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": channels, "resolution": 64, "in_channels": 3, "out_ch": 3,
                "ch": 32, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    shapes = AutoencoderKL(ddconfig=ddconfig, embed_dim=channels).state_dict()
    sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in shapes.items()}
    vae = comfy.sd.VAE(sd=sd, config={"params": {"ddconfig": ddconfig, "embed_dim": channels}})
    vae.latent_channels = channels  # what ComfyUI reads off a VAE file's decoder; a given config leaves it at 4
    return vae


@contextlib.contextmanager
def progress_hook(hook):
    """Install a ComfyUI progress-bar hook (value, total, preview, node_id) for the duration."""
    import comfy.model_management
    import comfy.utils

    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        yield
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
        comfy.model_management.interrupt_current_processing(False)


def interrupt_at(step: int, of: int | None = None):
    """A progress hook that presses ComfyUI's interrupt when the progress bar reaches `step` (of `of`)."""
    import comfy.model_management

    def hook(value, total, preview, node_id=None):
        if value == step and of in (None, total):
            comfy.model_management.interrupt_current_processing()

    return progress_hook(hook)


def tiny_clip(seed: int = 0):
    """comfy.sd.CLIP with SD1.5's tokenizer and a random 2-layer text encoder 64 wide (tiny_model's context)."""
    import functools
    import json

    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    config = json.loads((COMFYUI / "comfy" / "sd1_clip_config.json").read_text()) | {
        "hidden_size": CONTEXT_DIM, "intermediate_size": 4 * CONTEXT_DIM, "num_attention_heads": 2,
        "num_hidden_layers": 2, "projection_dim": CONTEXT_DIM}
    model = functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=comfy.sd1_clip.SDClipModel,
                              textmodel_json_config=config)
    clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, model))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clip.cond_stage_model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return clip
