"""Fixed 2-D sine-cosine position embeddings, as used by MAE and DMAE (encoder and decoder).

Layout (the MAE convention, so published checkpoints and fresh models agree): tokens are the
patches in row-major order (index = row * grid_w + col), optionally preceded by a zero row for
the class token. The first half of the channels encodes the patch's column, the second half its
row; each half is ``[sin(pos * omega_k)..., cos(pos * omega_k)...]`` with
``omega_k = 1 / 10000 ** (k / (dim / 4))``, k = 0 .. dim/4 - 1.
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Embed 1-D positions ``[M]`` into ``[M, dim]`` (``dim`` even): sines then cosines."""
    if dim % 2:
        raise ValueError(f"embed dim for 1-D sin-cos must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def get_2d_sincos_pos_embed(
    dim: int, grid_size: int | tuple[int, int], cls_token: bool = False
) -> torch.Tensor:
    """Return a float32 ``[(1 +) H*W, dim]`` table; the class-token row (if any) is all zeros.

    ``dim`` must be a multiple of 4 (half for columns, half for rows, each half sin + cos).
    """
    if dim % 4:
        raise ValueError(f"embed dim for 2-D sin-cos must be a multiple of 4, got {dim}")
    grid_h, grid_w = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    rows, cols = torch.meshgrid(
        torch.arange(grid_h), torch.arange(grid_w), indexing="ij"
    )  # row-major token order, like PatchEmbed's flatten
    emb = torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], 1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def fill_sincos_(param: torch.Tensor, grid_size: int | tuple[int, int]) -> None:
    """Write the fixed table into a ``[1, 1 + H*W, dim]`` parameter in place (no grad)."""
    table = get_2d_sincos_pos_embed(param.shape[-1], grid_size, cls_token=True)
    if tuple(param.shape[-2:]) != tuple(table.shape):
        raise ValueError(f"pos_embed shape {tuple(param.shape)} does not fit grid {grid_size}")
    with torch.no_grad():
        param.copy_(table.unsqueeze(0).to(param.dtype))
