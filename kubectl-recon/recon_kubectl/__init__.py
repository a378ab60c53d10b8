"""kubectl-recon: the command line of recon-operator, as a kubectl plugin (`kubectl recon ...`).

Importing it never imports PyTorch; the capture checks are recon-worker's own, from its core.
"""

__version__ = "0.1.0"
