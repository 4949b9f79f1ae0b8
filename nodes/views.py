"""Conditioning that depends on the camera: the "3D View Prompts" node, its DISTILL_VIEWS link, and the prior
that gives each camera of a step its own positive conditioning in one batched model evaluation.

A DISTILL_VIEWS link is anything with ``at(cameras) -> [CONDITIONING per camera]`` (distill.cameras.Cameras:
elevation, azimuth in degrees, azimuth 0 the front). 3D View Prompts picks one of four prompts by threestudio's
view labels (distill.cameras.view_labels); a camera-conditioned model (Stable Zero123: its conditioning holds the
camera's angles) plugs in as another such link, with no change to Optimize 3D. ``CameraDenoiser`` is the core's
ViewPrior (distill.scene_prior) on ComfyUI's evaluation.
"""
import uuid
from dataclasses import dataclass, field
from typing import Sequence

import torch

import comfy.sampler_helpers
import comfy.samplers
from comfy_api.latest import io

from ..distill.cameras import VIEWS, Cameras, view_labels
from .checks import check_conditioning, check_widgets
from .evaluation import ComfyDenoiser
from .types import CATEGORY, DistillViewsType

SUFFIX = ", {} view"
"""threestudio's view-dependent prompt: the prompt, then ", front view" (and so on)."""
NOT_PLAIN = ("control", "area", "mask", "hooks", "timestep_start", "timestep_end", "gligen", "default")
"""Cond entries one item of a batch cannot have on its own: each camera's prompt must be a plain one."""


def check_plain(input_name: str, cond) -> None:
    """A view's conditioning is one prompt (one entry, batch 1), without ControlNet, area, mask or hooks."""
    if not isinstance(cond, list) or len(cond) != 1 or not isinstance(cond[0][0], torch.Tensor):
        count = len(cond) if isinstance(cond, list) else "no"
        raise ValueError(f"{input_name}: it holds {count} conditionings; a view is one prompt: connect one "
                         "CLIP Text Encode (not a Conditioning Combine or Concat).")
    tensor, extras = cond[0]
    if tensor.shape[0] != 1:
        raise ValueError(f"{input_name}: it holds a batch of {tensor.shape[0]} prompts; a view is one prompt.")
    found = [k for k in NOT_PLAIN if k in extras]
    if found:
        raise ValueError(f"{input_name}: it carries {', '.join(found)}; each camera of a step gets its view's prompt "
                         "as one item of a batch, which cannot carry those. Connect the plain CLIP Text Encode.")


@dataclass(frozen=True)
class ViewPrompts:
    """A DISTILL_VIEWS link: the positive CONDITIONING of each of threestudio's view labels."""

    conditionings: dict[str, list]

    def at(self, cameras: Cameras) -> list[list]:
        """The CONDITIONING of each camera."""
        return [self.conditionings[label] for label in view_labels(cameras)]


PROBES = Cameras(torch.tensor([0.0, 0.0, 0.0, 80.0]), torch.tensor([0.0, 90.0, 180.0, 0.0]),
                 torch.full((4,), 2.0), torch.full((4,), 60.0))
"""A camera of each view label, in VIEWS' order."""


def check_views(views, positive: list) -> None:
    """Every view's conditioning is a plain prompt as wide as the loss's positive (the same text encoder)."""
    for view, cond in zip(VIEWS, views.at(PROBES)):
        check_plain(f"views: its {view} view", cond)
        check_conditioning(f"views: its {view} view", cond, positive, "the loss's positive")


@dataclass
class CameraConds:
    """Processed positive conds per camera, composed into one entry whose item i is camera i's conditioning.

    Each distinct CONDITIONING the views give is processed once with ComfyUI's own process_conds (as the
    guider processes its branches) and kept; a step's entry stacks their model conds row by row with each
    cond type's own concat (CONDCrossAttn pads prompts of other lengths by repetition, which does not change
    attention).
    """

    views: object
    model: object
    device: torch.device
    seed: int
    processed: dict[int, tuple[list, dict]] = field(default_factory=dict)

    def entry(self, cond: list, latent_shape: Sequence[int]) -> dict:
        key = id(cond)
        if key not in self.processed:
            zeros = torch.zeros((1, *latent_shape[1:]), device=self.device)
            branch = {"positive": comfy.sampler_helpers.convert_cond(cond)}
            entry = comfy.samplers.process_conds(self.model, zeros, branch, self.device, zeros, None, self.seed)
            self.processed[key] = (cond, entry["positive"][0])
        return self.processed[key][1]

    def branch(self, cameras: Cameras, latent_shape: Sequence[int]) -> list[dict]:
        """The processed "positive" branch of a batch seen from these cameras."""
        entries = [self.entry(c, latent_shape) for c in self.views.at(cameras)]
        first, rest = entries[0], entries[1:]
        model_conds = {}
        for key, cond in first["model_conds"].items():
            others = [e["model_conds"][key] for e in rest]
            if not all(cond.can_concat(o) for o in others):
                raise ValueError(f"views: the view prompts encode to different shapes of {key!r}; encode every "
                                 "view with the same CLIP.")
            model_conds[key] = cond._copy_with(cond.concat(others)) if others else cond
        return [first | {"model_conds": model_conds, "uuid": uuid.uuid4()}]


class CameraDenoiser:
    """distill.scene_prior.ViewPrior on ComfyUI's evaluation: ``for_cameras`` gives the ComfyDenoiser of a batch
    whose item i is seen from camera i, its "positive" branch each camera's view conditioning and every other
    branch (negative, NFSD's negative, …) as the loss connected them: one calc_cond_batch per evaluation.
    latent_shape: of the latents the loss sees ([B, C, h, w]; it sizes what the model's extra_conds derive)."""

    def __init__(self, denoiser: ComfyDenoiser, views, latent_shape: Sequence[int], seed: int):
        self.denoiser, self.latent_shape = denoiser, tuple(latent_shape)
        guider = denoiser.guider
        self.conds = CameraConds(views, guider.inner_model, guider.model_patcher.load_device, seed)

    def for_cameras(self, cameras: Cameras) -> ComfyDenoiser:
        return self.denoiser.with_branches({"positive": self.conds.branch(cameras, self.latent_shape)})


def encode(clip, text: str) -> list:
    """CLIP Text Encode's conditioning of a text."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


class ViewPrompts3D(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Distill3DViewPrompts",
            display_name="3D View Prompts",
            category=CATEGORY,
            description="Per-camera prompts for Optimize 3D (threestudio's view-dependent prompting): a camera "
                        "within 45° of azimuth 0 sees 'PROMPT, front view', within 45° of 180 'PROMPT, back view', "
                        "above 60° of elevation 'PROMPT, overhead view', any other 'PROMPT, side view'. Against the "
                        "multi-face (Janus) problem. A connected front/side/back/overhead conditioning replaces that "
                        "view's prompt.",
            inputs=[
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="What the object is (e.g. 'a DSLR photo of a corgi'); each view appends its "
                                        "suffix. Needs clip; ignored for views whose conditioning is connected."),
                io.Clip.Input("clip", optional=True, tooltip="Encodes the prompt with each view's suffix."),
                *[io.Conditioning.Input(view, optional=True,
                                        tooltip=f"The {view} view's conditioning, instead of the prompt with "
                                                f"'{SUFFIX.format(view)}' (one plain CLIP Text Encode).")
                  for view in VIEWS],
            ],
            outputs=[DistillViewsType.Output(display_name="views",
                                             tooltip="Connect to Optimize 3D's views."),
                     io.Conditioning.Output(display_name="positive",
                                            tooltip="The prompt without a view suffix (else the front view): connect "
                                                    "it to the loss's positive; Optimize 3D replaces it per camera.")],
        )

    @classmethod
    def execute(cls, prompt, clip=None, front=None, side=None,
                back=None, overhead=None) -> io.NodeOutput:
        check_widgets(cls, locals())
        given = {"front": front, "side": side, "back": back, "overhead": overhead}
        missing = [view for view in VIEWS if given[view] is None]
        if missing and (clip is None or not prompt.strip()):
            views = f"{', '.join(missing)} view{'s' * (len(missing) > 1)}"
            raise ValueError(f"clip: no CLIP and prompt to encode the {views}; connect the checkpoint's CLIP and "
                             f"write a prompt, or connect {', '.join(missing)}.")
        conds = {view: given[view] if given[view] is not None else encode(clip, prompt + SUFFIX.format(view))
                 for view in VIEWS}
        for view in VIEWS:
            check_plain(view, conds[view])
        width = conds["front"][0][0].shape[-1]
        for view in VIEWS:
            if conds[view][0][0].shape[-1] != width:
                raise ValueError(f"{view}: its conditioning is {conds[view][0][0].shape[-1]} wide but the front "
                                 f"view's is {width}; encode every view with the same CLIP.")
        positive = encode(clip, prompt) if clip is not None and prompt.strip() else conds["front"]
        return io.NodeOutput(ViewPrompts(conds), positive)
