"""physlearn: Equilibrium Propagation for physical Lagrangian oscillator networks.

Sub-packages: ``physlearn.simulators`` (the twin), ``physlearn.drivers`` (instruments),
``physlearn.calibration`` (bench calibration). See docs/architecture.md.
"""

__version__ = "0.1.0"
