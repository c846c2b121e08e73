"""numpy training batches (training.datasets) -> torch PolicyBatch pairs (query, key)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from t2mir_model import STATE, PolicyBatch, TokenBatch, append_queries, interleave_steps
from training.datasets import ADBatch, DPTBatch, DPTQueries, Segments


def _segment_tokens(seg: Segments, discrete: bool) -> TokenBatch:
    actions = torch.from_numpy(seg.actions)
    return interleave_steps(
        torch.from_numpy(seg.observations),
        actions.long() if discrete else actions.float(),
        torch.from_numpy(seg.rewards),
        torch.from_numpy(seg.timesteps),
        torch.from_numpy(seg.valid),
    )


def ad_policy_batch(seg: Segments, task_ids: np.ndarray, discrete: bool) -> PolicyBatch:
    """Segments (B, N steps) -> tokens (B, 3N) with every valid state token labelled by its action."""
    tokens = _segment_tokens(seg, discrete)
    mask = (tokens.kind == STATE) & tokens.valid
    return PolicyBatch(tokens, tokens.action, mask, torch.from_numpy(task_ids), dense=bool(seg.valid.all()))


def dpt_policy_batch(
    prompt: Segments, queries: DPTQueries, task_ids: np.ndarray, discrete: bool
) -> PolicyBatch:
    """Prompt (B, T steps) + Q queries -> tokens (B, 3T + Q) labelled at the queries."""
    b, q = queries.timesteps.shape
    tokens = append_queries(
        _segment_tokens(prompt, discrete),
        torch.from_numpy(queries.observations),
        torch.from_numpy(queries.timesteps),
        torch.ones(b, q, dtype=torch.bool),
    )
    labels = torch.from_numpy(queries.labels)
    labels = labels.long() if discrete else labels.float()
    k = tokens.shape[1] - q
    targets = torch.cat([torch.zeros((b, k, *labels.shape[2:]), dtype=labels.dtype), labels], 1)
    return PolicyBatch(tokens, targets, tokens.query.clone(), torch.from_numpy(task_ids), dense=False)


def truncate_prompts(prompt: Segments, rng: np.random.Generator) -> Segments:
    """Keep a uniformly random prefix (0 .. all valid steps) of every prompt row.

    At evaluation a DPT prompt starts empty (first episode) and is the previous episode later, so the
    policy must act well from any amount of prompt; the original DPT gets this by predicting at every
    context prefix. With the query placed after the prompt, truncating the prompt does the same."""
    lengths = prompt.valid.sum(1)  # (B,)
    keep = rng.integers(0, lengths + 1)  # (B,) inclusive of the empty and the full prompt
    valid = prompt.valid & (np.arange(prompt.valid.shape[1])[None, :] < keep[:, None])
    return dataclasses.replace(prompt, valid=valid)


def to_policy_batches(
    batch: ADBatch | DPTBatch, discrete: bool, rng: np.random.Generator | None = None
) -> tuple[PolicyBatch, PolicyBatch]:
    """(query batch, key batch) for Algorithm 1 or 3. With ``rng``, DPT query prompts are randomly
    truncated (``truncate_prompts``); key prompts stay whole for the contrastive task representation."""
    if isinstance(batch, ADBatch):
        return (
            ad_policy_batch(batch.query, batch.task_ids, discrete),
            ad_policy_batch(batch.key, batch.task_ids, discrete),
        )
    return (
        dpt_policy_batch(
            truncate_prompts(batch.prompt, rng) if rng is not None else batch.prompt,
            batch.query,
            batch.task_ids,
            discrete,
        ),
        dpt_policy_batch(batch.key_prompt, batch.key_query, batch.task_ids, discrete),
    )
