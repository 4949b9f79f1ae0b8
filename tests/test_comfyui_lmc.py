"""LMC-SDS inside a real ComfyUI: train → save → load → optimize, and every way a corrector file is refused."""
import pickle

import pytest
import torch

from comfy_harness import conditioning, pack, run_node, tiny_model

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

KINDS = ["eps", "v", "flow"]
SHAPE = (2, 4, 16, 16)
SD15 = dict(model_family="SD15", model_type="EPS", latent_format="SD15")
"""What the harness's tiny EPS model is to a corrector."""


@pytest.fixture
def corrector_folder(tmp_path):
    """models/lmc_correctors pointed at a temporary folder for the test."""
    import folder_paths

    name = pack("nodes.correctors").FOLDER
    old = folder_paths.folder_names_and_paths.get(name)
    folder = tmp_path / name
    folder.mkdir()
    folder_paths.folder_names_and_paths[name] = ([str(folder)], {".safetensors"})
    yield folder
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
    assert corrector.metadata["model_family"] == "SD15"
    assert corrector.metadata["model_type"] == {"eps": "EPS", "v": "V_PREDICTION", "flow": "FLOW"}[kind]
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
    corrector_file.save_corrector(corrector_folder / "rt.safetensors", net, **SD15,
                                  t_range=(0.02, 0.98), steps=0, final_loss=0.0, images=0)
    model = tiny_model("eps")
    in_memory = correctors.LoadedCorrector("rt.safetensors", net.eval(), SD15 | {"latent_channels": "4"})
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

    load_corrector = pack("distill.corrector_file").load_corrector
    for suffix in (".ckpt", ".pt", ".bin"):
        (corrector_folder / f"evil{suffix}").write_bytes(pickle.dumps(Evil()))
        refused(f"evil{suffix}", rf"corrector_name: 'evil\{suffix}' is not one of its options")
        with pytest.raises(ValueError, match=rf"evil\{suffix}: corrector files must be \.safetensors"):
            load_corrector(corrector_folder / f"evil{suffix}")
    assert not marker.exists()


def test_broken_files_are_refused_naming_the_file_and_reason(corrector_folder):
    from safetensors.torch import save_file

    corrector_file, corrector_mod = pack("distill.corrector_file"), pack("distill.corrector")
    corrector_file.save_corrector(corrector_folder / "good.safetensors", corrector_mod.UNetCorrector(4),
                                  **SD15, t_range=(0.02, 0.98), steps=0, final_loss=0.0, images=0)
    data = (corrector_folder / "good.safetensors").read_bytes()
    (corrector_folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    refused("truncated.safetensors", "corrector_name: truncated.safetensors: not a readable safetensors file")
    save_file({"w": torch.zeros(1)}, str(corrector_folder / "bare.safetensors"))
    refused("bare.safetensors", "corrector_name: bare.safetensors: metadata: lacks format_version")
    for name in ("../good.safetensors", "sub/good.safetensors", "missing.safetensors"):
        refused(name, f"corrector_name: '{name}' is not one of its options")
    node = pack("nodes.lmc").LMCCorrector
    assert "a corrector is named by its file name alone" in node.validate_inputs("../good.safetensors")
    assert "'missing.safetensors' is not one of its options" in node.validate_inputs("missing.safetensors")
    assert node.validate_inputs("good.safetensors") is True


@pytest.mark.parametrize("field,value,match", [
    ("latent_channels", "16", "made for 16-channel latents"),
    ("latent_format", "SDXL", "made for the SDXL latent space"),
    ("model_family", "SD20", "made for the SD20 model family"),
    ("model_type", "V_PREDICTION", "made for V_PREDICTION models"),
])
def test_a_corrector_for_another_model_or_latent_space_is_refused(field, value, match):
    correctors = pack("nodes.correctors")
    model = tiny_model("eps")
    other = correctors.LoadedCorrector("other.safetensors", pack("distill.corrector").UNetCorrector(4),
                                       correctors.what_it_models(model) | {field: value})
    with pytest.raises(ValueError, match=rf"corrector: other.safetensors was {match} but this model is SD15 \(EPS, "
                                         r"SD15 latents, 4 channels\); a corrector models one model's bias"):
        lmc_loss(model, other)


def test_a_lumina2_corrector_is_refused_on_flux_although_they_share_a_latent_space(corrector_folder):
    """Trained on each tiny model by the node's own function; the family is the model's supported_models class."""
    from families import family_conditioning, family_latent, family_model

    train_for_model = pack("nodes.train_corrector").train_for_model
    for name in ("lumina2", "flux"):
        train_for_model(family_model(name), family_conditioning(name, 2), torch.randn(1, 16, 8, 8), kind="spectral",
                        pairs=2, steps=1, seed=0, filename=f"{name}.safetensors")
    lumina2, flux = (run_node("DistillLMCCorrector", corrector_name=f"{n}.safetensors").args[0]
                     for n in ("lumina2", "flux"))
    assert lumina2.metadata["latent_format"] == flux.metadata["latent_format"] == "Flux"
    model = family_model("flux")
    conds = {"positive": family_conditioning("flux", 1), "negative": family_conditioning("flux", 2)}
    with pytest.raises(ValueError, match=r"corrector: lumina2.safetensors was made for the Lumina2 model family but "
                                         r"this model is Flux \(FLUX, Flux latents, 16 channels\)"):
        run_node("DistillSDSLoss", model=model, cfg=8.0, weighting="auto", t_min=0.02, t_max=0.98,
                 t_schedule="uniform", grad_clip=0.0, corrector=lumina2, **conds)
    loss = run_node("DistillSDSLoss", model=model, cfg=8.0, weighting="auto", t_min=0.02, t_max=0.98,
                    t_schedule="uniform", grad_clip=0.0, corrector=flux, **conds).args[0]
    latent = family_latent("flux")
    out = run_node("DistillOptimizeLatent", latent={"samples": latent}, loss=loss, steps=1, learning_rate=0.1,
                   optimizer="adamw", lr_schedule="cosine", seed=0, l2_to_init=0.0).args[0]["samples"]
    assert out.shape == latent.shape and torch.isfinite(out).all()


@pytest.fixture
def input_dir(tmp_path):
    """ComfyUI's input directory pointed at a temporary folder for the test."""
    import folder_paths

    old = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path / "input"))
    (tmp_path / "input").mkdir()
    yield tmp_path / "input"
    folder_paths.set_input_directory(old)


def train_args(**kw):
    return dict(model=tiny_model("eps"), unconditional=conditioning(2), kind="spectral", filename="x.safetensors",
                pairs_per_latent=2, steps=1, seed=0, image_size=64) | kw


def test_training_from_a_folder_of_images_in_the_input_directory(corrector_folder, input_dir):
    from PIL import Image

    from comfy_harness import tiny_vae

    (input_dir / "sets" / "photos").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (80, 64), (40 * i, 100, 200)).save(input_dir / "sets" / "photos" / f"{i}.png")
    corrector, _ = run_node("DistillTrainLMCCorrector", **train_args(filename="photos.safetensors", vae=tiny_vae(),
                                                                    folder="sets/photos")).args
    assert corrector.metadata["images"] == "3"


def test_a_folder_outside_the_input_directory_is_refused_without_saying_whether_it_exists(
        corrector_folder, input_dir, tmp_path):
    from PIL import Image

    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (64, 64)).save(outside / "secret.png")
    (input_dir / "link").symlink_to(outside)
    (input_dir / "dangling").symlink_to(tmp_path / "nowhere")
    for folder in (str(outside), str(tmp_path / "nowhere"), "../outside", "../nowhere", "a/../../outside", "\\outside",
                   "C:outside"):
        with pytest.raises(ValueError, match=r"^folder: .* is not a subfolder name; give a folder inside ComfyUI's"):
            run_node("DistillTrainLMCCorrector", **train_args(model=None, vae=object(), folder=folder))
    messages = set()
    for folder in ("link", "dangling", "missing"):
        with pytest.raises(ValueError, match=rf"^folder: there is no folder '{folder}' in ComfyUI's input") as e:
            run_node("DistillTrainLMCCorrector", **train_args(model=None, vae=object(), folder=folder))
        messages.add(str(e.value).replace(folder, "NAME"))
    assert len(messages) == 1 and not list(corrector_folder.iterdir())


def test_an_image_linked_from_outside_the_input_directory_is_not_read(corrector_folder, input_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "secret.png")
    (input_dir / "photos").mkdir()
    (input_dir / "photos" / "a.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(ValueError, match=r"folder: photos/a\.png links outside ComfyUI's input directory"):
        run_node("DistillTrainLMCCorrector", **train_args(model=None, vae=object(), folder="photos"))


def test_an_interrupted_run_replaces_nothing_even_with_overwrite(corrector_folder):
    import comfy.model_management

    from comfy_harness import interrupt_at

    (corrector_folder / "kept.safetensors").write_bytes(b"the user's corrector")
    with interrupt_at(3, of=40), pytest.raises(comfy.model_management.InterruptProcessingException):
        run_node("DistillTrainLMCCorrector", **train_args(filename="kept.safetensors", kind="unet", steps=40,
                                                          pairs_per_latent=4, image_size=128, overwrite=True))
    assert (corrector_folder / "kept.safetensors").read_bytes() == b"the user's corrector"
    assert [p.name for p in corrector_folder.iterdir()] == ["kept.safetensors"]


def test_an_existing_corrector_is_replaced_only_with_overwrite(corrector_folder):
    (corrector_folder / "kept.safetensors").write_bytes(b"the user's corrector")
    with pytest.raises(ValueError, match=r"filename: kept\.safetensors already exists in models/lmc_correctors/; "
                                         "choose another name, or turn on overwrite"):
        run_node("DistillTrainLMCCorrector", **train_args(model=None, filename="kept.safetensors"))
    assert (corrector_folder / "kept.safetensors").read_bytes() == b"the user's corrector"
    corrector, _ = run_node("DistillTrainLMCCorrector", **train_args(filename="kept.safetensors", overwrite=True)).args
    assert corrector.metadata["kind"] == "spectral"


def test_a_save_killed_midway_leaves_a_temporary_file_that_the_next_run_removes_first(corrector_folder):
    import signal
    import subprocess
    import sys

    from comfy_harness import PACK_ROOT

    script = f"""
import sys, time
sys.path.insert(0, {str(PACK_ROOT)!r})
import torch
import distill.corrector_file as cf
from distill.corrector import SpectralCorrector
real = cf.save_file
def stall(tensors, path, metadata):
    real(tensors, path, metadata=metadata)
    print("written", flush=True)
    time.sleep(600)
cf.save_file = stall
cf.save_corrector({str(corrector_folder / "killed.safetensors")!r}, SpectralCorrector(torch.ones(4, 2, 2),
                  torch.tensor([0.2, 0.8])), model_family="SD15", model_type="EPS", latent_format="SD15",
                  t_range=(0.02, 0.98), steps=0, final_loss=0.0, images=0)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert [p.name for p in corrector_folder.iterdir()] == [f".killed.safetensors.{proc.pid}.partial"]
    pack("nodes.correctors").new_file("next.safetensors", overwrite=False)  # what a run does before any work
    assert not list(corrector_folder.iterdir())


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
