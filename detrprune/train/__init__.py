"""rules/train.smk (and the fine-tunes of rules/prune.smk): the mmdet model config, training
and fine-tuning by mmengine's Runner, pretrained starts, checkpoints the DAG passes along."""
