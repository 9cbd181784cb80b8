"""Training: configs, data sets and encodings, optimizers, the loop and its state, evaluation,
the run directory, per-step records and the event stream they listen to."""
