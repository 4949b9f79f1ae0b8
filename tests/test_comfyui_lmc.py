"""LMC-SDS inside a real ComfyUI: train → save → load → optimize, and every way a corrector file is refused."""
import pickle

import pytest
import torch

from comfy_harness import conditioning, pack, run_node, tiny_model

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

KINDS = ["eps", "v", "flow"]
SHAPE = (2, 4, 16, 16)


@pytest.fixture
def corrector_folder(tmp_path):
    """models/lmc_correctors pointed at a temporary folder for the test."""
    import folder_paths

    name = pack("nodes.correctors").FOLDER
    old = folder_paths.folder_names_and_paths.get(name)
    folder_paths.folder_names_and_paths[name] = ([str(tmp_path)], {".safetensors"})
    yield tmp_path
    folder_paths.folder_names_and_paths[name] = old


def train(model, filename, kind="spectral", steps=5):
    return run_node("DistillTrainLMCCorrector", model=model, unconditional=conditioning(2), kind=kind,
                    filename=filename, pairs_per_latent=4, steps=steps, seed=0, image_size=128).args


def lmc_loss(model, corrector, fixed_noise=False):
    return run_node("DistillSDSLoss", model=model, positive=conditioning(1), negative=conditioning(2), cfg=8.0,
                    weighting="auto", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0,
                    corrector=corrector, fixed_noise=fixed_noise).args[0]


def optimize(loss, steps=3, seed=0):
    return run_node("DistillOptimizeLatent", latent={"samples": torch.zeros(SHAPE)}, loss=loss, steps=steps,
                    learning_rate=0.1, optimizer="adamw", lr_schedule="cosine", seed=seed,
                    l2_to_init=0.0).args[0]["samples"]


@pytest.mark.parametrize("kind", KINDS)
def test_train_save_load_and_optimize_with_lmc_sds(kind, corrector_folder):
    model = tiny_model(kind)
    corrector, curve = train(model, f"tiny_{kind}.safetensors", kind="unet", steps=5)
    assert (corrector_folder / f"tiny_{kind}.safetensors").is_file()
    assert corrector.metadata["latent_format"] == "SD15" and corrector.metadata["steps"] == "5"
    assert curve.shape[-1] == 3
    loaded = run_node("DistillLMCCorrector", corrector_name=f"tiny_{kind}.safetensors").args[0]
    loss = lmc_loss(model, loaded)
    assert loss.loss.weighting == "uniform"  # auto: w(t) = 1 for LMC-SDS, as the paper
    out = optimize(loss)
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_spectral_corrector_from_the_models_own_samples(corrector_folder):
    model = tiny_model("eps")
    corrector, _ = train(model, "spectral.safetensors", kind="spectral")
    assert corrector.metadata["kind"] == "spectral" and corrector.metadata["images"] == "16"
    assert torch.isfinite(optimize(lmc_loss(model, corrector))).all()


def test_a_save_load_round_trip_reproduces_the_optimization_bit_identically(corrector_folder):
    correctors = pack("nodes.correctors")
    corrector_mod, corrector_file = pack("distill.corrector"), pack("distill.corrector_file")
    net = corrector_mod.UNetCorrector(4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    corrector_file.save_corrector(corrector_folder / "rt.safetensors", net, latent_format="SD15",
                                  t_range=(0.02, 0.98), steps=0, final_loss=0.0, images=0)
    model = tiny_model("eps")
    in_memory = correctors.LoadedCorrector("rt.safetensors", net.eval(), {"latent_channels": "4", "latent_format": "SD15"})
    loaded = run_node("DistillLMCCorrector", corrector_name="rt.safetensors").args[0]
    assert torch.equal(optimize(lmc_loss(model, in_memory)), optimize(lmc_loss(model, loaded)))


def test_one_forward_per_step_and_fixed_noise_differs_across_seeds(corrector_folder):
    model = tiny_model("eps")
    corrector, _ = train(model, "c.safetensors")
    counted = model.clone()
    batches = []
    counted.set_model_unet_function_wrapper(
        lambda apply, args: batches.append(args["input"].shape[0]) or apply(args["input"], args["timestep"], **args["c"]))
    loss = lmc_loss(counted, corrector, fixed_noise=True)
    a = optimize(loss, seed=1)
    assert batches == [3 * SHAPE[0]] * 3  # cond and uncond at the fixed noise, uncond at a fresh noise: one call
    assert torch.equal(a, optimize(loss, seed=1)) and not torch.equal(a, optimize(loss, seed=2))


def refused(name, match):
    with pytest.raises(ValueError, match=match):
        run_node("DistillLMCCorrector", corrector_name=name)


def test_pickle_formats_are_refused_without_unpickling(corrector_folder, tmp_path):
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for suffix in (".ckpt", ".pt", ".bin"):
        (corrector_folder / f"evil{suffix}").write_bytes(pickle.dumps(Evil()))
        refused(f"evil{suffix}", rf"evil\{suffix}: corrector files must be \.safetensors")
    assert not marker.exists()


def test_broken_files_are_refused_naming_the_file_and_reason(corrector_folder):
    from safetensors.torch import save_file

    corrector_file, corrector_mod = pack("distill.corrector_file"), pack("distill.corrector")
    corrector_file.save_corrector(corrector_folder / "good.safetensors", corrector_mod.UNetCorrector(4),
                                  latent_format="SD15", t_range=(0.02, 0.98), steps=0, final_loss=0.0, images=0)
    data = (corrector_folder / "good.safetensors").read_bytes()
    (corrector_folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    refused("truncated.safetensors", "truncated.safetensors: not a readable safetensors file")
    save_file({"w": torch.zeros(1)}, str(corrector_folder / "bare.safetensors"))
    refused("bare.safetensors", "bare.safetensors: metadata lacks format_version")
    refused("../good.safetensors", r"\.\./good\.safetensors: a corrector is named by its file name alone")
    refused("sub/good.safetensors", "a corrector is named by its file name alone")
    refused("missing.safetensors", "missing.safetensors: no such file")


@pytest.mark.parametrize("channels,family,match", [
    (16, "SD15", "made for 16-channel latents but this model's have 4"),
    (4, "SDXL", "made for the SDXL latent space but this model uses SD15"),
])
def test_a_corrector_for_another_latent_space_is_refused(corrector_folder, channels, family, match):
    corrector_file, corrector_mod = pack("distill.corrector_file"), pack("distill.corrector")
    corrector_file.save_corrector(corrector_folder / "other.safetensors", corrector_mod.UNetCorrector(channels),
                                  latent_format=family, t_range=(0.02, 0.98), steps=0, final_loss=0.0, images=0)
    loaded = run_node("DistillLMCCorrector", corrector_name="other.safetensors").args[0]
    with pytest.raises(ValueError, match=f"corrector: other.safetensors was {match}"):
        lmc_loss(tiny_model("eps"), loaded)


def test_training_from_a_folder_of_images_through_the_vae(corrector_folder, tmp_path):
    from PIL import Image

    from comfy_harness import tiny_vae

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (80, 64), (40 * i, 100, 200)).save(photos / f"{i}.png")
    corrector, _ = run_node("DistillTrainLMCCorrector", model=tiny_model("eps"), unconditional=conditioning(2),
                            kind="spectral", filename="photos.safetensors", pairs_per_latent=2, steps=1, seed=0,
                            vae=tiny_vae(), folder=str(photos), image_size=64).args
    assert corrector.metadata["images"] == "3"
    with pytest.raises(ValueError, match="folder: .* is not a folder"):
        run_node("DistillTrainLMCCorrector", model=tiny_model("eps"), unconditional=conditioning(2), kind="spectral",
                 filename="x.safetensors", pairs_per_latent=2, steps=1, seed=0, vae=tiny_vae(),
                 folder=str(tmp_path / "nope"), image_size=64)


def test_an_interrupt_during_training_still_saves_what_was_learned(corrector_folder):
    import comfy.model_management

    from comfy_harness import interrupt_at

    with interrupt_at(3, of=40), pytest.raises(comfy.model_management.InterruptProcessingException):
        train(tiny_model("eps"), "partial.safetensors", kind="unet", steps=40)  # 40: not the 50 DDIM steps
    saved = run_node("DistillLMCCorrector", corrector_name="partial.safetensors").args[0]
    assert saved.metadata["steps"] == "3"


def test_training_shows_each_phase_and_an_interrupt_before_training_saves_nothing(corrector_folder):
    import comfy.model_management

    from comfy_harness import interrupt_at, progress_hook

    seen = []
    with progress_hook(lambda value, total, preview, node_id=None: seen.append((value, total))):
        train(tiny_model("eps"), "phases.safetensors", kind="unet", steps=5)
    sampling, collecting, training = 50, 16 * 4 * 2, 5  # DDIM steps; 16 sampled latents × 4 antithetic pairs
    assert {(sampling, sampling), (collecting, collecting), (training, training)} <= set(seen)
    with interrupt_at(16, of=collecting), pytest.raises(comfy.model_management.InterruptProcessingException):
        train(tiny_model("eps"), "stopped.safetensors", kind="unet", steps=5)
    assert not (corrector_folder / "stopped.safetensors").exists()


def test_make_corrector_command_trains_from_a_checkpoint_file(live_server, tmp_path):
    """corrector_weights/make_corrector.py on the live tests' SD1.5 checkpoint file and example image."""
    import subprocess
    import sys
    import uuid

    from comfy_harness import COMFYUI, PACK_ROOT

    checkpoint = next((live_server.base / "models" / "checkpoints").glob("*.safetensors"))
    name = f"test_cli_{uuid.uuid4().hex[:8]}.safetensors"
    result = subprocess.run(
        [sys.executable, "corrector_weights/make_corrector.py", "--checkpoint", str(checkpoint), "--images",
         str(live_server.base / "input"), "--size", "64", "--pairs", "2", "--out", name, "--cpu",
         "--comfyui", str(COMFYUI)], cwd=PACK_ROOT, capture_output=True, text=True, timeout=300)
    path = COMFYUI / "models" / "lmc_correctors" / name
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "collecting 4/4" in result.stdout and f"saved {path}" in result.stdout, result.stdout
        _, metadata = pack("distill.corrector_file").load_corrector(path)
        assert metadata["latent_format"] == "SD15" and metadata["images"] == "1"
    finally:
        path.unlink(missing_ok=True)
