"""DDS and PDS parity with their authors' codes (``reference_editing``) on diffusers, with test_parity.py's weights,
fixed t, replayed draws and tolerance rule (the pack within 2⁴ float32 roundings R of the float64 reference).

At HEAD before issue 22 these gradients already agreed on 1000-level tables; what the tests below would have caught
there is the optimizer (``test_dds_step_is_the_notebooks_sgd_step``: the pack had no SGD) and, through each
other-convention check, a β_t of the grid step or the other CFG form.
"""
import pytest
import torch

import reference_diffusers as ref
import reference_editing as edit
from comfy_harness import conditioning, pack, run_node
from test_parity import C, NEGATIVE, POSITIVE, SHAPE, U, assert_parity, models, normals, pack_step, reference

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

SOURCE = conditioning(4)
S = SOURCE[0][0]


def source_latent() -> torch.Tensor:
    """The reference in the units pack_step's latent has (raw VAE units; the pack works on it ×0.18215)."""
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(8)) / 0.18215


def editing_step(node: str, kind: str, cfg: float, k: int, **settings) -> tuple[dict, torch.Tensor]:
    """The pack's first step at timestep k (a linear anneal from t_max = k/999), and the reference in model space."""
    loss = run_node(node, model=models(kind)[0], reference={"samples": source_latent()}, source=SOURCE,
                    target=POSITIVE, negative=NEGATIVE, cfg=cfg, weighting="auto", t_min=0.01, t_max=k / 999,
                    t_schedule="linear_anneal", grad_clip=0.0, **settings).args[0]
    return pack_step(loss), loss.loss.reference


@pytest.mark.parametrize("kind,k", [("eps", 50), ("v", 948)])
def test_dds_gradient_matches_the_notebook(kind, k):
    """t ∈ [50, 949) as the notebook draws it; its guidance 7.5 is the standard form, cfg 7.5 here."""
    seen, z_src = editing_step("DistillDDSLoss", kind, 7.5, k)
    (eps,) = normals(seen["draws"], 1)
    expected = reference(kind, edit.dds_gradient, seen["x"], z_src, k, eps, C, S, U, 7.5)
    tol = assert_parity(seen["g"], expected)
    threestudio_form = reference(kind, edit.dds_gradient, seen["x"], z_src, k, eps, C, S, U, 8.5)[1]
    assert (threestudio_form - expected[1]).abs().max() > 4 * tol


def test_dds_step_is_the_notebooks_sgd_step():
    """dds_editing's optimizer: one step of Optimize Latent (sgd, lr 0.1) is torch's SGD on the notebook's loss."""
    distill = pack("distill")
    seen, z_src = editing_step("DistillDDSLoss", "eps", 7.5, 500)
    settings = distill.Settings(steps=1, lr=0.1, optimizer="sgd", lr_schedule="constant")

    class Fixed:
        def gradient(self, denoiser, x, run):
            return g

    x, g = seen["x"].clone(), seen["g"].clone()  # ordinary tensors: the step is taken outside inference mode
    stepped, _ = distill.optimize(x, Fixed(), None, settings)
    expected = edit.dds_sgd_step(x, g)
    assert torch.allclose(stepped, expected, rtol=1e-6, atol=1e-6 * expected.abs().max())
    assert (stepped - x).abs().max() > 0.5 * (0.1 * 2000 / 256) * g.abs().max()


def pds_pair(kind: str, seen: dict, z_src: torch.Tensor, k: int, cfg: float, eps_prev: torch.Tensor,
             grid_beta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """pds.py's gradient on the float32 prior (the scheduler's float32 β) and on its float64 twin (β from the
    definition); ``grid_beta``: the other convention, β_t = 1 − ᾱ_t/ᾱ_{t−2} of the grid's own step."""
    (eps,) = normals(seen["draws"], 1)
    _, prior, twin = models(kind)
    out = []
    for p, betas, dtype in ((prior, prior.scheduler.betas, torch.float32), (twin, edit.sd_betas(), torch.float64)):
        args = [a.to(dtype) for a in (seen["x"], z_src, eps, eps_prev, C, S, U)]
        if grid_beta:
            abar = p.scheduler.alphas_cumprod.to(dtype)
            betas = betas.clone()
            betas[k] = 1 - abar[k] / abar[k - 2]
        out.append(edit.pds_gradient(p, args[0], args[1], k, *args[2:], cfg, betas.to(dtype)))
    return out[0], out[1]


@pytest.mark.parametrize("kind,k", [("eps", 979), ("v", 501)])
def test_pds_gradient_matches_the_authors_code(kind, k):
    """t on PDS's 500-level grid (odd timesteps, 21 and 979 its ends at ratios 0.02 and 0.98), cfg 50 (the 2D
    notebook's; the standard form in pds.py too); ε_{t−1} is any draw, it cancels from the difference."""
    seen, z_src = editing_step("DistillPDSLoss", kind, 50.0, k)
    eps_prev = torch.randn(SHAPE, generator=torch.Generator().manual_seed(12))
    expected = pds_pair(kind, seen, z_src, k, 50.0, eps_prev)
    tol = assert_parity(seen["g"], expected)
    grid_beta = pds_pair(kind, seen, z_src, k, 50.0, eps_prev, grid_beta=True)[1]
    assert (grid_beta - expected[1]).abs().max() > 4 * tol
