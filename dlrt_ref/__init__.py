"""dlrt_ref: dynamical low-rank training (DLRT), a pure-NumPy reference implementation.

See README.md for a quickstart and ../DESIGN notes in the docs for the architecture.
"""
__version__ = "0.1.0"
