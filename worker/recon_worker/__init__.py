"""recon-worker: the process inside a ReconstructionJob's batch Job.

Importing this package is cheap: modules that need PyTorch import it themselves.
"""

__version__ = "0.1.0"
