"""efflab's shared library: kernels, metrics, model wrappers, data, plotting, claims.

Submodules are imported lazily by their users (``from shared import data``); this file
imports nothing heavy, so that a notebook that only needs numpy never pays for torch.
"""
