"""Decoding engines and the interface the server and the evaluator drive them through.

`interface` (the `PolicyEngine` protocol and the plain data it exchanges), `decode` (the T2MIR
family's `DecodeEngine`) and `loading` (`load_engine`: a checkpoint directory -> an engine of its
family). The public names are exported by `t2mir_model`.
"""
