"""recon-operator: reconciles ReconstructionJob resources into GPU batch Jobs."""

__version__ = "0.1.0"
