"""rules/evaluate.smk: COCO and KITTI-style AP, latency, FLOPs, sizes, and the ONNX export."""
