"""kubectl-recon and recon-worker's core work where PyTorch is not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Makes `import torch` fail in the child, as on a machine without the worker's `engine` extra.
HIDE_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    class HideTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, HideTorch())
    """
)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", HIDE_TORCH + code], capture_output=True, text=True, timeout=120)


def test_the_plugin_and_the_capture_checks_import_no_torch() -> None:
    result = run(
        "import recon_kubectl.cli, recon_kubectl.transfer, recon_worker.capture_checks, recon_worker.runner\n"
        "assert 'torch' not in sys.modules\n"
        "from recon_kubectl.cli import main\n"
        "sys.exit(main(['--version']))"
    )
    assert result.returncode == 0, result.stderr
    assert "kubectl-recon 0.1.0" in result.stdout


def test_engine_commands_say_which_extra_is_missing() -> None:
    result = run("from recon_worker.cli import main\nsys.exit(main(['local', '--input', '/x', '--output', '/y']))")
    assert result.returncode == 2
    assert "pip install 'recon-worker[engine]'" in result.stderr
