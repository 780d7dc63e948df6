"""Optical strain magnitude of a flow field, as the MEGC flow-image papers compute it.

STSTNet (Liong et al. 2019) publishes no preprocessing code; its authors' later MEAN and
SOFTNet code (``computeStrain`` in genbing99/MEAN_Spot-then-recognize and SoftNet-SpotME)
computes, with pandas ``shift(-1)``:

    u_x = u[y, x] - u[y, x+1]    v_y = v[y, x] - v[y+1, x]
    u_y = u[y, x] - u[y+1, x]    v_x = v[y, x] - v[y, x+1]
    os  = sqrt(u_x^2 + v_y^2 + 1/2 (u_y + v_x)^2)

i.e. forward differences with the sign flipped (which the squares cancel), and the
undefined last column and last row filled forward from the previous column / row
(``ffill(axis=1).ffill(axis=0)``). We reproduce exactly that.
"""

from __future__ import annotations

import torch


def optical_strain(flow: torch.Tensor) -> torch.Tensor:
    """Strain magnitude ``(B, 1, H, W)`` of a flow ``(B, 2, H, W)`` (u, v in pixels)."""
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W), got {tuple(flow.shape)}")
    if flow.shape[-1] < 2 or flow.shape[-2] < 2:
        raise ValueError(f"flow must be at least 2x2 pixels, got {tuple(flow.shape[-2:])}")
    u, v = flow[:, 0], flow[:, 1]
    u_x = u[:, :-1, :-1] - u[:, :-1, 1:]
    v_x = v[:, :-1, :-1] - v[:, :-1, 1:]
    u_y = u[:, :-1, :-1] - u[:, 1:, :-1]
    v_y = v[:, :-1, :-1] - v[:, 1:, :-1]
    inner = torch.sqrt(u_x * u_x + v_y * v_y + 0.5 * (u_y + v_x) ** 2)
    # Forward fill: last column copies the previous one, then last row the previous row.
    filled = torch.cat((inner, inner[:, :, -1:]), dim=2)
    filled = torch.cat((filled, filled[:, -1:, :]), dim=1)
    return filled.unsqueeze(1)
