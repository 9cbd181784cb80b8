"""Gradient estimators: EP variants, black-box baselines, and the exact adjoint (twin only)."""
