"""Matrix ODE problems with exact or reference solutions, for validating the integrators."""
