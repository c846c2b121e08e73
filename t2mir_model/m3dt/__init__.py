"""The M3DT family (Kong et al., ICML 2025): a Prompt-DT backbone whose blocks add a soft mixture of
experts beside the dense MLP, for one policy over tens to hundreds of tasks.

`configuration` (M3DTConfig), `prompt` (TaskPrompt, the per-task demonstration a session names),
`modeling` (M3DTPolicy: tokens, blocks, loss, routing statistics), `batch` (M3DTBatch and how a
prompt plus a session's last K steps become one), `checkpoint` (save/load, shipped prompts) and
`engine` (M3DTEngine, the family's `PolicyEngine`). The public names are exported by `t2mir_model`.
"""
