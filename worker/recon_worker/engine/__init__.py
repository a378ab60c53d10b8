"""The reconstruction engine: renderer backends, capture synthesis and the engine's pipeline stages.

Importing this package does not import PyTorch; the modules that need it import it themselves.
"""
