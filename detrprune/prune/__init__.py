"""rules/prune.smk: filter and weight pruning, the iterative loop, the compact sparse format."""
