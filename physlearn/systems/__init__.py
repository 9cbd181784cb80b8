"""`PhysicalSystem` implementations, one per fidelity level (ideal twin, emulated bench in memory,
emulated bench served over TCP/pty, real bench), the factory that picks one from a config, the
knowledge a level gives the estimators, and safety wrappers."""
