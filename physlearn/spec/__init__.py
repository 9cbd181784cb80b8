"""The vocabulary every part of physlearn speaks: network spec, modulations, nonlinearities,
physical-unit front ends, topologies, the bench file, output limits, the `PhysicalSystem`
interface, tasks, sampled waveforms and the controller clock. Nothing here imports upward."""
