"""Every node checks its own widget values (range, finiteness, combo options) and tensor shapes before any
work, with one message naming the input; its validate_inputs takes only the inputs it checks."""
import inspect
import math

import pytest
import torch

from comfy_harness import conditioning, run_node, tiny_model

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

PACK_NODES = ("DistillSDSLoss", "DistillNFSDGuidance", "DistillDDIMInvertNoise", "DistillLMCCorrector",
              "DistillTrainLMCCorrector", "DistillOptimizeLatent", "DistillOptimizeImage", "DistillCSDLoss",
              "DistillISMLoss", "DistillSDSBridgeLoss", "DistillASDLoss")


def node_class(node_id):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[node_id]


def widgets(node_id):
    from comfy_api.latest import io

    kinds = (io.Float.Input, io.Int.Input, io.Combo.Input, io.Boolean.Input, io.String.Input)
    return [spec for spec in node_class(node_id).define_schema().inputs if isinstance(spec, kinds)]


def bad_values(spec):
    """Values that break the spec: non-finite, out of range, of the wrong type, not an option."""
    from comfy_api.latest import io

    if isinstance(spec, io.Combo.Input):
        return ["bogus", 3]
    if isinstance(spec, io.Boolean.Input):
        return ["yes"]
    if isinstance(spec, io.String.Input):
        return [5]
    out = [spec.min - 1, spec.max + 1, "3"]
    if isinstance(spec, io.Float.Input):
        out += [math.nan, math.inf, -math.inf]
    else:
        out += [1.5, True]
    return out


def valid_arguments(node_id):
    """Every input: widgets at their defaults (the first option of a combo without one), links as None."""
    out = {}
    for spec in node_class(node_id).define_schema().inputs:
        default = getattr(spec, "default", None)
        if default is None and getattr(spec, "options", None):
            default = spec.options[0]
        out[spec.id] = default
    return out


@pytest.mark.parametrize("node_id", PACK_NODES)
def test_every_widget_value_is_checked_first_thing_naming_the_input(node_id):
    """Links are None here: any work before the check would fail with another error than the input's."""
    wrong = []
    for spec in widgets(node_id):
        for value in bad_values(spec):
            try:
                run_node(node_id, **valid_arguments(node_id) | {spec.id: value})
                wrong.append((spec.id, value, "accepted"))
            except ValueError as e:
                if not str(e).startswith(f"{spec.id}: "):
                    wrong.append((spec.id, value, str(e)))
    assert not wrong


def test_validate_inputs_take_only_what_they_check_so_comfyui_still_checks_the_rest():
    """ComfyUI 0.3.64 skips its min/max check for every input a validate_inputs accepts (all of them with **)."""
    expected = {"DistillSDSLoss": ["t_min", "t_max"], "DistillNFSDGuidance": ["t_min", "t_max"],
                "DistillLMCCorrector": ["corrector_name"], "DistillTrainLMCCorrector": ["filename"],
                "DistillCSDLoss": ["t_min", "t_max", "late_t_max"], "DistillISMLoss": ["t_min", "t_max"],
                "DistillSDSBridgeLoss": ["t_min", "t_max"], "DistillASDLoss": ["t_min", "t_max"]}
    for node_id in PACK_NODES:
        validate = node_class(node_id).__dict__.get("validate_inputs")
        if node_id not in expected:
            assert validate is None, node_id
            continue
        spec = inspect.getfullargspec(validate.__func__)
        assert spec.varkw is None and spec.args[1:] == expected[node_id], node_id


@pytest.mark.parametrize("node_id", ["DistillSDSLoss", "DistillNFSDGuidance"])
def test_validate_inputs_checks_the_ranges_comfyui_leaves_to_it(node_id):
    node = node_class(node_id)
    assert node.validate_inputs(t_min=0.1, t_max=0.9) is True
    assert node.validate_inputs(t_min=None, t_max=0.9) is True  # linked: checked in execute
    assert node.validate_inputs(t_min=-0.5, t_max=0.9).startswith("t_min: -0.5 is outside its range")
    assert node.validate_inputs(t_min=0.1, t_max=math.nan).startswith("t_max: nan is not a finite number")
    assert node.validate_inputs(t_min=0.9, t_max=0.1).startswith("t_min (0.9) must be below t_max (0.1)")


@pytest.mark.parametrize("name", [".safetensors", "a\0b.safetensors", "x" * 300 + ".safetensors", "a/b.safetensors",
                                  "..\\b.safetensors", "corrector", "corrector.ckpt", " c.safetensors",
                                  "c?.safetensors", ".hidden.safetensors"])
def test_bad_corrector_file_names_are_refused_before_any_work(name):
    assert node_class("DistillTrainLMCCorrector").validate_inputs(filename=name) is not True
    with pytest.raises(ValueError, match="^filename: "):
        run_node("DistillTrainLMCCorrector", **valid_arguments("DistillTrainLMCCorrector") | {"filename": name})


def sds_loss():
    return run_node("DistillSDSLoss", model=tiny_model("eps"), positive=conditioning(1), negative=conditioning(2),
                    cfg=7.5, weighting="sds", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0).args[0]


@pytest.mark.parametrize("shape,message", [
    ((4, 16, 16), r"latent: its samples are a 3-D tensor of shape \[4, 16, 16\]; this model \(SD15\) works on 4-D"),
    ((1, 4, 2, 16, 16), r"latent: its samples are a 5-D tensor of shape \[1, 4, 2, 16, 16\]"),
    ((0, 4, 16, 16), r"latent: it is empty \(shape \[0, 4, 16, 16\]\)"),
    ((1, 4, 0, 16), r"latent: it is empty \(shape \[1, 4, 0, 16\]\)"),
    ((1, 8, 16, 16), r"latent: this latent has 8 channels \(shape \[1, 8, 16, 16\]\) but the model \(SD15\) works on 4"),
])
def test_a_latent_of_another_shape_is_described_as_it_is(shape, message):
    with pytest.raises(ValueError, match=message):
        run_node("DistillOptimizeLatent", latent={"samples": torch.full(shape, 0.5)}, loss=sds_loss(), steps=1,
                 learning_rate=0.1, optimizer="adamw", lr_schedule="cosine", seed=0, l2_to_init=0.0)


IMAGE_SHAPES = [
    ((1, 64, 64, 1), r"it has 1 channel \(shape \[1, 64, 64, 1\]\); this node needs RGB images"),
    ((1, 64, 64, 2), r"it has 2 channels \(shape \[1, 64, 64, 2\]\)"),
    ((0, 64, 64, 3), r"shape \[0, 64, 64, 3\] is empty or smaller than 8×8 pixels"),
    ((1, 4, 64, 3), r"shape \[1, 4, 64, 3\] is empty or smaller than 8×8 pixels"),
    ((1, 2, 64, 64, 3), r"it is a 5-D tensor of shape \[1, 2, 64, 64, 3\]; an IMAGE is \[batch, height, width, channels\]"),
    ((64, 64, 3), r"it is a 3-D tensor of shape \[64, 64, 3\]"),
]


@pytest.mark.parametrize("shape,message", IMAGE_SHAPES)
def test_an_image_of_another_shape_is_described_as_it_is(shape, message):
    from comfy_harness import tiny_vae

    with pytest.raises(ValueError, match=f"^image: {message}"):
        run_node("DistillOptimizeImage", **valid_arguments("DistillOptimizeImage") | {
            "vae": tiny_vae(), "loss": sds_loss(), "image": torch.zeros(shape), "steps": 1})
    with pytest.raises(ValueError, match=f"^images: {message}"):
        run_node("DistillTrainLMCCorrector", **valid_arguments("DistillTrainLMCCorrector") | {
            "images": torch.zeros(shape), "vae": tiny_vae()})
