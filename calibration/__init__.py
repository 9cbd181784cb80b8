"""Bench calibration routines (installed as ``physlearn.calibration``)."""
