"""nvdiffrast (CUDA): the production rasterizer. Non-commercial licence; see the README."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recon_worker.engine.render.base import Raster
from recon_worker.engine.render.edge_antialias import SilhouetteCompositor


def _put_plugin_dir_on_path() -> None:
    """nvdiffrast JIT-compiles its plugin, then imports it by name; with PyTorch >= 2 the build
    directory is no longer on `sys.path`, so the import after a fresh build fails without this."""
    import nvdiffrast
    from torch.utils import cpp_extension

    name = re.sub(r"\W|^(?=\d)", "_", f"nvdiffrast_plugin_{nvdiffrast.__version__}_torch{torch.__version__}")
    build_dir = cpp_extension._get_build_directory(name, False)
    Path(build_dir).mkdir(parents=True, exist_ok=True)
    if build_dir not in sys.path:
        sys.path.append(build_dir)
    # Compile for the GPU at hand only (a build for every architecture takes minutes).
    if "TORCH_CUDA_ARCH_LIST" not in os.environ and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"


@dataclass
class NvdiffrastRaster:
    # nvdiffrast's native orientation: row 0 is the BOTTOM of the picture (OpenGL). Our clip space has y
    # growing down the image, so the backend hands nvdiffrast positions with y negated (front faces stay
    # counter-clockwise, as OpenGL tools expect) and flips what it returns.
    rast: torch.Tensor  # [B, H, W, 4]: (u, v, z/w, triangle_id + 1), 0 where empty; native rows
    pos_native: torch.Tensor  # [B, V, 4] the positions rasterized (y negated)

    @property
    def mask(self) -> torch.Tensor:
        return (self.rast[..., 3:4] > 0).flip(1)

    @property
    def triangle_id(self) -> torch.Tensor:
        return (self.rast[..., 3].long() - 1).flip(1)


_FLIP_Y = (1.0, -1.0, 1.0, 1.0)


class NvdiffrastRenderer:
    name = "nvdiffrast"

    def __init__(self, device: torch.device | str = "cuda") -> None:
        _put_plugin_dir_on_path()
        import nvdiffrast.torch as dr

        self._dr: Any = dr
        self.device = torch.device(device)
        self._ctx = dr.RasterizeCudaContext(device=self.device)
        self._composite = SilhouetteCompositor()

    def rasterize(self, pos_clip: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> NvdiffrastRaster:
        pos_native = (pos_clip * pos_clip.new_tensor(_FLIP_Y)).contiguous()
        rast, _ = self._dr.rasterize(self._ctx, pos_native, tri.int().contiguous(), resolution)
        return NvdiffrastRaster(rast, pos_native)

    def interpolate(self, attr: torch.Tensor, raster: Raster, tri: torch.Tensor) -> torch.Tensor:
        assert isinstance(raster, NvdiffrastRaster)
        out, _ = self._dr.interpolate(attr.contiguous(), raster.rast, tri.int().contiguous())
        return out.flip(1)

    def texture(self, tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        # nvdiffrast's (0, 0) is the first texel of row 0, which is the top of our image: flip v.
        uv_dr = torch.stack([uv[..., 0], 1.0 - uv[..., 1]], dim=-1).contiguous()
        return self._dr.texture(tex[None].contiguous(), uv_dr, filter_mode="linear", boundary_mode="clamp")

    def antialias(
        self,
        foreground: torch.Tensor,
        background: torch.Tensor,
        raster: Raster,
        pos_clip: torch.Tensor,
        tri: torch.Tensor,
    ) -> torch.Tensor:
        assert isinstance(raster, NvdiffrastRaster)
        # Not `dr.antialias`: see edge_antialias.py for why (it misses the contour of fine meshes).
        return self._composite(foreground, background, raster.mask, raster.triangle_id, pos_clip, tri)
