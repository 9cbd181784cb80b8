"""Instrument drivers (installed as ``physlearn.drivers``)."""
