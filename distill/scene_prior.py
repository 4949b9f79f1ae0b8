"""What the loss sees of a diffusion model when the optimized thing is a 3D scene: a prior per camera.

A ViewPrior turns one step's cameras into the pack's Denoiser for that step's batch, whose item i is the render
from camera i: every loss of the pack (SDS, NFSD, SDI, LMC-SDS) then runs through it unchanged, its positive
branch now depending on the camera. View prompts implement it by giving item i the conditioning of camera i's
view label (``cameras.view_labels``: front / side / back / overhead); a camera-conditioned model (Stable
Zero123) by conditioning item i on camera i's elevation and azimuth; an exact prior by its images at camera i.

The loop calls the denoiser only with whole batches, item i always camera i: it shares one t among a step's
cameras (``one_t_per_batch``), so that SDI's inversion walks every item the same number of levels and never
evaluates a subset of the batch (``ddim_invert`` lets items that arrive early leave it).
"""
from dataclasses import dataclass
from typing import Protocol, Sequence

from torch import Tensor

from .cameras import Cameras
from .denoiser import Denoiser, Request


class ViewPrior(Protocol):
    def for_cameras(self, cameras: Cameras) -> Denoiser:
        """The denoiser for a batch whose item i is seen from camera i (cameras on the CPU)."""


@dataclass(frozen=True)
class SameForEveryCamera:
    """One denoiser for every camera: a prompt without view conditioning (the multi-face failure's setting)."""

    denoiser: Denoiser

    def for_cameras(self, cameras: Cameras) -> Denoiser:
        return self.denoiser


class CameraBatch:
    """A step's denoiser as the loop hands it to the loss: one t for all its cameras, whole batches only."""

    one_t_per_batch = True

    def __init__(self, denoiser: Denoiser, cameras: int):
        self.denoiser, self.cameras = denoiser, cameras
        self.sigmas = denoiser.sigmas

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return self.denoiser.coefficients(sigma)

    def __call__(self, requests: Sequence[Request], sigma: Tensor) -> list[dict[str, Tensor]]:
        if any(len(r.x_noisy) != self.cameras for r in requests):
            raise RuntimeError(f"a per-camera denoiser of {self.cameras} cameras was called with batches of "
                               f"{[len(r.x_noisy) for r in requests]}: item i must be camera i.")
        return self.denoiser(requests, sigma)
