"""Training: the one loop, checkpoints, data, and a function per stage."""
