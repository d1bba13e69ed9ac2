"""dlrt_ref: dynamical low-rank training (DLRT), a pure-NumPy reference implementation.

See README.md for a quickstart and ARCHITECTURE.md (at the repository root) for the house:
which module owns which concept, what may import what, and the life of a training step.
"""
__version__ = "0.1.0"
