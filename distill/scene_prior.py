"""What the loss sees of a diffusion model when the optimized thing is a 3D scene: a prior per camera.

A ViewPrior turns one step's cameras into the pack's Denoiser for that step's batch, whose item i is the render
from camera i: every loss of the pack (SDS, NFSD, SDI, LMC-SDS) then runs through it unchanged, its positive
branch now depending on the camera. View prompts implement it by giving item i the conditioning of camera i's
view label (``cameras.view_labels``: front / side / back / overhead); a camera-conditioned model (Stable
Zero123) by conditioning item i on camera i's elevation and azimuth; an exact prior by its images at camera i.
"""
from dataclasses import dataclass
from typing import Protocol

from .cameras import Cameras
from .denoiser import Denoiser


class ViewPrior(Protocol):
    def for_cameras(self, cameras: Cameras) -> Denoiser:
        """The denoiser for a batch whose item i is seen from camera i (cameras on the CPU)."""


@dataclass(frozen=True)
class SameForEveryCamera:
    """One denoiser for every camera: a prompt without view conditioning (the multi-face failure's setting)."""

    denoiser: Denoiser

    def for_cameras(self, cameras: Cameras) -> Denoiser:
        return self.denoiser
