"""Pruning study of a Deformable DETR detector on KITTI (logic behind the Snakemake workflow)."""

__version__ = "0.1.0"
