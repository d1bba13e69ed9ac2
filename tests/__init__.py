"""The test suite, arranged as the package is (ARCHITECTURE.md).

core/ (backend, lowrank, operators, substeps, integrators), nn/, train/, ode/, data/, experiments/
and gpu/ (the CuPy stand-in and the parity tests) mirror dlrt_ref/; the files at this level test what
spans the package (the command line's exit policy, the tutorials, the benchmarks). Shared helpers
live in ``tests.helpers`` and are imported by their full name.
"""
