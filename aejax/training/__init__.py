"""Training: the state, the pure step and the compiled epoch (`step`), the run loop (`loop`), checkpoints, the
run directory and its TensorBoard events, reloading (`restore`), sweeps, losses, optimizers and data
parallelism. Import the modules themselves; this package re-exports nothing, so importing one of them loads
only what it needs."""
