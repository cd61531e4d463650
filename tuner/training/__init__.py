"""Training: the trial, its loop, metrics, checkpoints, and where it reports."""
