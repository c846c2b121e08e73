"""M3DT's multi-task suite: data collection, the three-stage trainer, grouping and evaluation.

`suite` (the tasks: Meta-World MT50 with its scripted experts + Point-Robot goals, and how each is
stepped), `collect` (``t2mir collect --suite m3dt``), `dataset` (windows + prompts for training),
`grouping` (gradient / random task groups for stage 2), `trainer` (``t2mir train`` with an M3DT
config), `evaluate` (``t2mir eval`` on an M3DT checkpoint) and `plots`.
"""
