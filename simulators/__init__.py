"""The software twin: dynamics, steady states, exact gradients (``physlearn.simulators``)."""
