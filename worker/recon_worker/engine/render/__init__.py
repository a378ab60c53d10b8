"""Renderer backends behind one interface (`base.Renderer`): nvdiffrast on CUDA, PyTorch3D elsewhere."""

from __future__ import annotations

import importlib.util
from typing import Literal

import torch

from recon_worker.engine.render.base import Raster, Renderer

RendererName = Literal["auto", "nvdiffrast", "pytorch3d"]

__all__ = ["Raster", "Renderer", "RendererName", "get_renderer", "nvdiffrast_available"]


def nvdiffrast_available(device: str | torch.device) -> bool:
    return (
        torch.device(device).type == "cuda"
        and torch.cuda.is_available()
        and importlib.util.find_spec("nvdiffrast") is not None
    )


def get_renderer(device: str | torch.device, preference: str = "auto") -> Renderer:
    """The renderer for `device`: nvdiffrast when on CUDA and importable (`auto`), else PyTorch3D.

    `preference` forces a backend; asking for nvdiffrast where it cannot run is an error that says why.
    """
    if preference not in ("auto", "nvdiffrast", "pytorch3d"):
        raise ValueError(f"unknown renderer {preference!r}; expected auto, nvdiffrast or pytorch3d")
    use_nvdiffrast = preference == "nvdiffrast" or (preference == "auto" and nvdiffrast_available(device))
    if use_nvdiffrast:
        if torch.device(device).type != "cuda":
            raise ValueError(f"renderer nvdiffrast needs a CUDA device, not {device!r}")
        if importlib.util.find_spec("nvdiffrast") is None:
            raise ValueError("renderer nvdiffrast is not installed (pip install 'recon-worker[cuda]')")
        from recon_worker.engine.render.nvdiffrast_backend import NvdiffrastRenderer

        return NvdiffrastRenderer(device)
    from recon_worker.engine.render.pytorch3d_backend import Pytorch3dRenderer

    return Pytorch3dRenderer(device)
