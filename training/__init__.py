"""Training side of vcl: backbones, checkpoints, losses, methods and the training loop.

Imports torch. The runtime package :mod:`vcl_infer` never imports this package.
"""
