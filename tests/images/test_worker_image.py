"""The worker image, run as the operator's Jobs run it: read-only root filesystem, uid 1000, no
capabilities, no privilege escalation, scratch on a tmpfs at /scratch (TMPDIR and HOME), and no
network at all, so nothing can be downloaded at run time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from localinstall import render_capture

from tests.images.conftest import Docker

pytestmark = [pytest.mark.images, pytest.mark.slow]

# Tiny and quick on 2 CPU cores, as the e2e suite's jobs.
VIEWS, TEST_VIEWS, RESOLUTION = 8, 2, 48
TINY = {
    "reconstruction.resolution": 32,
    "refinement.iterations": 8,
    "refinement.renderResolution": 48,
    "refinement.textureSize": 256,
    "export.targetFaces": 2000,
}


def run_as_a_pod(docker: Docker, image: str, capture: Path, output: Path, *args: str) -> tuple[int, str]:
    output.mkdir(mode=0o777, exist_ok=True)
    output.chmod(0o777)  # the container's uid 1000 writes here
    result = docker(
        "run", "--rm", "--network", "none", "--read-only", "--user", "1000:1000",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--tmpfs", "/scratch:rw,size=2g,mode=1777", "-e", "TMPDIR=/scratch", "-e", "HOME=/scratch",
        "-v", f"{capture}:/input:ro", "-v", f"{output}:/output",
        image, *args,
        check=False, timeout=900,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def test_image_runs_as_uid_1000_with_the_prebuilt_plugin(docker: Docker, worker_image: str) -> None:
    config = json.loads(docker("image", "inspect", worker_image).stdout)[0]["Config"]
    assert config["User"] == "1000:1000"
    listing = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", worker_image, "-c",
                     "id -u; find /opt/torch_extensions -name '*.so'").stdout.split()  # fmt: skip
    assert listing[0] == "1000"
    assert any(name.endswith(".so") and "nvdiffrast_plugin" in name for name in listing[1:]), listing


def test_reconstructs_a_cpu_draft_capture(docker: Docker, worker_image: str, tmp_path: Path) -> None:
    capture = render_capture(tmp_path / "capture", VIEWS, TEST_VIEWS, RESOLUTION)
    capture.chmod(0o755)
    settings = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    code, log = run_as_a_pod(
        docker, worker_image, capture, tmp_path / "out",
        "local", "--input", "/input", "--output", "/output", "--device", "cpu", "--quality", "draft", *settings,
    )  # fmt: skip
    assert code == 0, log[-4000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    names = {entry["name"] for entry in manifest["files"]}
    assert "mesh.glb" in names and "report.json" in names, names
    assert (tmp_path / "out" / "mesh.glb").stat().st_size > 1000


def test_rejects_a_bad_capture_with_exit_2_naming_the_culprit(
    docker: Docker, worker_image: str, tmp_path: Path
) -> None:
    capture = tmp_path / "bad"
    capture.mkdir()
    (capture / "transforms.json").write_text('{"camera_angle_x": 0.69, "frames": [')
    capture.chmod(0o755)
    (capture / "transforms.json").chmod(0o644)
    code, log = run_as_a_pod(docker, worker_image, capture, tmp_path / "out", "local", "--input", "/input",
                             "--output", "/output", "--device", "cpu")  # fmt: skip
    assert code == 2, log[-4000:]
    assert "transforms.json" in log, log[-4000:]
    assert not (tmp_path / "out" / "manifest.json").exists()
