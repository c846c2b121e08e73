"""The T2MIR family (token- and task-wise MoE on AD / DPT backbones), LeRobot-style.

`configuration` (T2MIRConfig, MoEConfig, the observation/action specs), `modeling` (T2MIRPolicy),
`token_moe` and `task_moe` (the two mixtures), `blocks`, `embeddings`, `tokens` (the s, a, r token
sequence), `context` (what each backbone reads from a session history), `outputs` (forward
results and routing statistics) and `fused_step` (the compiled one-session decode step). The
public names are exported by `t2mir_model`.
"""
