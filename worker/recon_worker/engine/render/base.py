"""The renderer interface: the four differentiable primitives the engine builds every image from.

Conventions shared by every backend:

- Positions enter in clip space, `[B, V, 4]` homogeneous, as produced by `engine.cameras`. After the
  perspective divide, x and y in [-1, 1] span the image; x grows to the right and y grows DOWN the
  image, so row 0 of every output is the top row of the picture (as stored in PNG files). Smaller
  z/w is nearer. Triangles are never culled (winding does not matter).
- Images are `[B, H, W, C]` float tensors, row 0 at the top.
- UVs follow the OBJ/glTF-on-disk convention of this project: u to the right, v UP the texture image,
  (0, 0) the bottom-left corner. Texture tensors are `[Ht, Wt, C]` with row 0 the TOP row of the image
  file, so `texture(tex, uv)` samples the image at pixel (u * Wt, (1 - v) * Ht).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


class Raster(Protocol):
    """Backend-specific result of `Renderer.rasterize`; only its renderer reads its content."""

    @property
    def mask(self) -> torch.Tensor:
        """[B, H, W, 1] bool: a triangle covers the pixel centre."""
        ...

    @property
    def triangle_id(self) -> torch.Tensor:
        """[B, H, W] int64: index of the covering triangle, -1 where none."""
        ...


@runtime_checkable
class Renderer(Protocol):
    """A differentiable triangle rasterizer (nvdiffrast on CUDA, PyTorch3D on CPU)."""

    name: str
    device: torch.device

    def rasterize(self, pos_clip: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> Raster:
        """Rasterize `pos_clip` [B, V, 4] with triangles `tri` [F, 3] (int32/int64) into (H, W) images."""
        ...

    def interpolate(self, attr: torch.Tensor, raster: Raster, tri: torch.Tensor) -> torch.Tensor:
        """Per-pixel attributes [B, H, W, C] from vertex attributes `attr` [V, C] or [B, V, C].

        Differentiable w.r.t. `attr` and the positions that were rasterized. Uncovered pixels hold
        an unspecified value: select them with `raster.mask`.
        """
        ...

    def texture(self, tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """Bilinear lookup of `tex` [Ht, Wt, C] at `uv` [B, H, W, 2] -> [B, H, W, C] (see the UV convention)."""
        ...

    def antialias(
        self,
        foreground: torch.Tensor,
        background: torch.Tensor,
        raster: Raster,
        pos_clip: torch.Tensor,
        tri: torch.Tensor,
    ) -> torch.Tensor:
        """Composite `foreground` [B, H, W, C] over `background` ([C] or [B, H, W, C]) with smooth edges.

        This is where silhouette gradients come from: the coverage of edge pixels depends on the
        vertex positions, so a loss on the composite moves the silhouette. nvdiffrast blends across
        geometric edges analytically (`dr.antialias`); PyTorch3D uses a soft coverage from each
        pixel's signed distance to the nearest triangles.
        """
        ...


def describe(renderer: Renderer) -> dict[str, Any]:
    """What the report says about the renderer that produced its figures."""
    return {"renderer": renderer.name, "device": str(renderer.device)}
