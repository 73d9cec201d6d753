"""rules/data.smk: KITTI archives (downloaded or synthesized), their extraction, COCO JSON."""
