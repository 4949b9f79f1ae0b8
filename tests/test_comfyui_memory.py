"""How the nodes use ComfyUI's memory management and model precision, in a real ComfyUI.

Optimize Image needs the UNet and the VAE at once: they are loaded in one load_models_gpu call, so that
neither evicts the other even with --disable-smart-memory, and an unloaded UNet would also lose its
weight patches (LoRAs). Half-precision weights run through ComfyUI's casts; the latents stay float32.
"""
import copy

import pytest
import torch

from comfy_harness import conditioning, pack, run_node, tiny_model, tiny_vae

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

ACCELERATOR = torch.device("cpu", 0)
"""A load device that ComfyUI's memory management treats as an accelerator (it frees memory, and with
smart memory off unloads every model, on any device but torch.device("cpu")) with ordinary CPU tensors."""

NATIVE = 64
LORA_KEY = "diffusion_model.out.2.weight"


def sds_loss(model, cfg=7.5):
    return run_node("DistillSDSLoss", model=model, positive=conditioning(1), negative=conditioning(2), cfg=cfg,
                    weighting="auto", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0).args[0]


def optimize_image(loss, vae, size=2 * NATIVE, steps=3):
    """Step 0 on the whole image, then two native-size patches per step."""
    image = torch.rand((1, size, size, 3), generator=torch.Generator().manual_seed(7))
    return run_node("DistillOptimizeImage", vae=vae, loss=loss, start="image", width=size, height=size, steps=steps,
                    learning_rate=0.05, lr_end=0.01, seed=0, l2_to_init=0.0, whole_image_steps=1, patches=2,
                    native_size=NATIVE, image=image).args


def with_lora(model, rank=2):
    """A clone carrying a LoRA weight patch on the UNet's output conv, and a copy of the model with the
    patch merged by hand (W + up·down), whose predictions the patched model must give."""
    import comfy.weight_adapter

    weight = model.model.state_dict()[LORA_KEY]
    g = torch.Generator().manual_seed(3)
    up, down = torch.randn(weight.shape[0], rank, generator=g), torch.randn(rank, weight[0].numel(), generator=g)
    patched = model.clone()
    adapter = comfy.weight_adapter.LoRAAdapter(set(), (up, down, None, None, None, None))
    assert patched.add_patches({LORA_KEY: adapter}) == [LORA_KEY]
    merged = copy.deepcopy(model.model)
    with torch.no_grad():
        merged.diffusion_model.out[2].weight += (up @ down).reshape(weight.shape)
    return patched, merged


@pytest.fixture
def memory_events(monkeypatch):
    """Every load_models_gpu call (its models and memory estimate) and every model unload, in order."""
    import comfy.model_management as mm

    events = []
    load, unload = mm.load_models_gpu, mm.LoadedModel.model_unload

    def recording_load(models, memory_required=0, *args, **kwargs):
        events.append(("load", list(models), memory_required))
        return load(models, memory_required, *args, **kwargs)

    def recording_unload(self, *args, **kwargs):
        events.append(("unload", self.model.model))
        return unload(self, *args, **kwargs)

    monkeypatch.setattr(mm, "load_models_gpu", recording_load)
    monkeypatch.setattr(mm.LoadedModel, "model_unload", recording_unload)
    return events


def test_with_smart_memory_off_optimize_image_keeps_the_patched_unet_loaded_beside_the_vae(monkeypatch,
                                                                                           memory_events):
    import comfy.model_management
    import comfy.patcher_extension

    monkeypatch.setattr(comfy.model_management, "DISABLE_SMART_MEMORY", True)
    model = tiny_model("eps")
    model.load_device = ACCELERATOR
    vae = tiny_vae()
    vae.device = vae.patcher.load_device = ACCELERATOR
    patched, merged = with_lora(model)
    plain = copy.deepcopy(model.model)

    def watch(apply, args):
        out = apply(args["input"], args["timestep"], **args["c"])
        memory_events.append(("unet", out, merged.apply_model(args["input"], args["timestep"], **args["c"]),
                              plain.apply_model(args["input"], args["timestep"], **args["c"])))
        return out

    patched.set_model_unet_function_wrapper(watch)
    prepared = []  # another pack's wrapper around ComfyUI's preparation still runs

    def other_pack(executor, *args, **kwargs):
        prepared.append(True)
        return executor(*args, **kwargs)

    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, "other_pack", other_pack)
    vae.first_stage_model.encoder.register_forward_hook(lambda *_: memory_events.append(("vae",)))
    loss = sds_loss(patched)
    memory_events.clear()
    optimize_image(loss, vae)

    steps = [e for e in memory_events if e[0] == "unet"]
    assert len(steps) == 3 and prepared == [True]
    for _, out, with_patch, without_patch in steps:
        assert torch.allclose(out, with_patch, atol=1e-5) and not torch.allclose(out, without_patch, atol=1e-3)
    loads = [e for e in memory_events if e[0] == "load"]
    assert len(loads) == 1 and memory_events[0] is loads[0]  # one call, before any model runs
    _, models, memory = loads[0]
    assert {id(m.model) for m in models} == {id(patched.model), id(vae.first_stage_model)}
    encoder_memory = pack("nodes.vae_gradients").encoder_memory
    assert memory >= encoder_memory(vae, 2, NATIVE, NATIVE)  # the two patches of a step through the encoder
    used = [k for k, e in enumerate(memory_events) if e[0] in ("unet", "vae")]
    assert not [e for e in memory_events[used[0]:used[-1]] if e[0] == "unload"]


def test_the_encoder_memory_estimate_covers_the_activations_autograd_keeps_in_the_sd_vae():
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * 0.02 for k, v in AutoencoderKL(ddconfig=ddconfig, embed_dim=4).state_dict().items()}
    vae = comfy.sd.VAE(sd=sd, config={"params": {"ddconfig": ddconfig, "embed_dim": 4}})
    weights = {p.untyped_storage().data_ptr() for p in vae.first_stage_model.parameters()}
    kept = {}

    def pack_hook(t):
        if t.untyped_storage().data_ptr() not in weights:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    size = 64
    pixels = torch.rand(1, 3, size, size, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        vae.first_stage_model.encode(vae.process_input(pixels).to(vae.vae_dtype))
    forward = vae.memory_used_encode((1, 3, size, size), vae.vae_dtype)
    activations = sum(kept.values())
    print(f"SD VAE encoder at {size}²: autograd keeps {activations / forward:.2f}× ComfyUI's forward estimate")
    assert activations + forward <= pack("nodes.vae_gradients").encoder_memory(vae, 1, size, size)


@pytest.fixture
def optimizers(monkeypatch):
    """The optimizers the pack's loop makes, recorded."""
    table = pack("distill.optimize").OPTIMIZERS
    made = []
    for name, cls in table.items():
        def init(self, *args, _cls=cls, **kwargs):
            _cls.__init__(self, *args, **kwargs)
            made.append(self)

        monkeypatch.setitem(table, name, type(cls.__name__, (cls,), {"__init__": init}))
    return made


def test_a_float16_model_through_manual_cast_gives_finite_float32_results_on_the_intermediate_device(optimizers):
    import comfy.model_management

    model = tiny_model("eps", dtype=torch.float16)
    assert next(model.model.diffusion_model.parameters()).dtype == torch.float16
    assert model.model.manual_cast_dtype == torch.float32
    inputs = []

    def watch(apply, args):
        inputs.append(args["input"].dtype)
        return apply(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(watch)
    loss = sds_loss(model)
    latent = run_node("DistillOptimizeLatent", latent={"samples": torch.zeros(1, 4, 8, 8)}, loss=loss, steps=2,
                      learning_rate=0.1, optimizer="adamw", lr_schedule="cosine", seed=0,
                      l2_to_init=0.0).args[0]["samples"]
    image, _ = optimize_image(loss, tiny_vae(), size=NATIVE, steps=2)

    device = comfy.model_management.intermediate_device()
    for out in (latent, image):
        assert out.dtype == torch.float32 and torch.isfinite(out).all() and out.device == device
    assert latent.abs().max() > 0
    assert inputs and set(inputs) == {torch.float32}
    state = [v for opt in optimizers for s in opt.state.values() for k, v in s.items() if k != "step"]
    assert len(optimizers) == 2 and state
    assert all(v.dtype == torch.float32 and v.device.type == model.load_device.type for v in state)
