"""Training: the DLRT optimiser, optimisers, baselines, accounting, the fit loop and its CLI."""
