"""Small random policies, token sequences and checkpoints shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from t2mir_model import (
    ActionSpec,
    ActRequest,
    DecodeEngine,
    M3DTConfig,
    M3DTPolicy,
    MoEConfig,
    ObservationSpec,
    StepRow,
    T2MIRConfig,
    T2MIRPolicy,
    TaskPrompt,
    TokenBatch,
    append_queries,
    interleave_steps,
)
from t2mir_model.history import SessionHistory
from t2mir_model.t2mir.tokens import slice_tokens


def tiny_config(backbone: str = "ad", discrete: bool = True, **moe: object) -> T2MIRConfig:
    """A 2-layer d=32 config with both MoEs on unless overridden."""
    action = (
        ActionSpec("discrete", n=5)
        if discrete
        else ActionSpec("continuous", dim=3, low=(-2.0,) * 3, high=(2.0,) * 3)
    )
    return T2MIRConfig(
        observation=ObservationSpec(4, mean=(0.1, 0.0, -0.2, 0.3), std=(1.0, 2.0, 0.5, 1.0)),
        action=action,
        backbone=backbone,
        d_model=32,
        n_layers=2,
        n_heads=4,
        dropout=0.0,
        max_episode_steps=6,
        context_episodes=3,
        moe=MoEConfig(positions="all", **moe),
    )


def tiny_policy(seed: int = 0, **kwargs: object) -> T2MIRPolicy:
    """A random tiny policy in eval mode."""
    torch.manual_seed(seed)
    return T2MIRPolicy(tiny_config(**kwargs)).eval()


def random_steps(config: T2MIRConfig, n_steps: int, seed: int, batch: int = 1) -> TokenBatch:
    """Random (s, a, r) tokens for ``n_steps`` steps of episodes of length max_episode_steps."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch, n_steps, config.observation.dim, generator=g)
    if config.action.is_discrete:
        act = torch.randint(0, config.action.n, (batch, n_steps), generator=g)
    else:
        act = torch.rand(batch, n_steps, config.action.dim, generator=g) * 4 - 2
    rew = torch.randn(batch, n_steps, generator=g)
    timestep = (torch.arange(n_steps) % config.max_episode_steps).repeat(batch, 1)
    return interleave_steps(obs, act, rew, timestep, torch.ones(batch, n_steps, dtype=torch.bool))


def next_step_tokens(policy: T2MIRPolicy, context: TokenBatch, seed: int = 7) -> tuple[TokenBatch, StepRow]:
    """The next one-session step after ``context`` (on the CPU): AD commits a, r, s; DPT sends one
    query state. Returns the tokens and the step's row for slot 0."""
    config = policy.config
    if config.backbone == "ad":
        return slice_tokens(random_steps(config, 2, seed=seed), 1, 4), StepRow(0, 3)
    g = torch.Generator().manual_seed(seed)
    empty = slice_tokens(context.to("cpu"), 0, 0)
    query = append_queries(
        empty,
        torch.randn(1, 1, config.observation.dim, generator=g),
        torch.tensor([[2]]),
        torch.ones(1, 1).bool(),
    )
    return query, StepRow(0, 0, 1)


def play_session(engine: DecodeEngine, steps: int, seed: int) -> list[tuple[torch.Tensor, dict]]:
    """One session through ``steps`` acts of ``engine`` (episodes close at max_episode_steps), with
    random observations and rewards; the action and the routing statistics of every act."""
    config = engine.config
    g = torch.Generator().manual_seed(seed)
    history = SessionHistory()
    history.observe(torch.randn(config.observation.dim, generator=g))
    played = []
    for t in range(steps):
        out = engine.act([ActRequest("s", history, seed=t)])
        action = out.results[0].action
        layers = out.routing[0]
        played.append(
            (
                action,
                {(r.layer, "token"): r.token.counts for r in layers}
                | {(r.layer, "task"): r.task.weights for r in layers},
            )
        )
        obs = torch.randn(config.observation.dim, generator=g)
        if history.t + 1 >= config.max_episode_steps:
            history.close(action, 1.0)
            history.observe(obs)
        else:
            history.observe(obs, float(t % 3), action)
    return played


def write_checkpoint(directory: Path, name: str, version: str, seed: int = 0, **config: Any) -> Path:
    """A random T2MIR-AD checkpoint with DarkRoom spaces (obs 2-d, 5 actions) unless overridden."""
    fields: dict[str, Any] = {
        "observation": ObservationSpec(2),
        "action": ActionSpec("discrete", n=5),
        "env_id": "t2mir/DarkRoom-v0",
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 2,
        "max_episode_steps": 100,
        "context_episodes": 4,
    }
    fields.update(config)
    torch.manual_seed(seed)
    T2MIRPolicy(T2MIRConfig(**fields)).save_pretrained(directory, card={"name": name, "version": version})
    return directory


M3DT_TASKS = {"reach-v3": (39, 4), "point-robot-00": (2, 2)}
"""Task name -> (observation width, action width) of the prompts `write_m3dt_checkpoint` ships."""


def m3dt_prompt(obs_width: int, act_width: int, steps: int = 3, seed: int = 0) -> TaskPrompt:
    """A random task prompt of ``steps`` steps (timesteps 0.., returns-to-go falling from 10)."""
    g = torch.Generator().manual_seed(seed)
    return TaskPrompt(
        obs=torch.randn(steps, obs_width, generator=g),
        actions=torch.rand(steps, act_width, generator=g) * 2 - 1,
        returns_to_go=torch.linspace(10.0, 10.0 - steps + 1, steps),
        timesteps=torch.arange(steps),
    )


def tiny_m3dt_config(**overrides: Any) -> M3DTConfig:
    """A 2-layer d=32 M3DT with 4 experts, K=4 window steps and 3 prompt steps, 30-step episodes."""
    fields: dict[str, Any] = {
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 2,
        "n_experts": 4,
        "router_hidden": 16,
        "context_steps": 4,
        "prompt_steps": 3,
        "max_timestep": 30,
        "dropout": 0.0,
        "env_id": "m3dt/test",
    }
    fields.update(overrides)
    return M3DTConfig(**fields)


def write_m3dt_checkpoint(
    directory: Path, name: str = "m3dt-test", version: str = "1", seed: int = 0, **overrides: Any
) -> Path:
    """A random tiny M3DT checkpoint shipping the prompts of `M3DT_TASKS` (reach-v3 with a card
    target return of 7.5; point-robot-00 without, so its default comes from its prompt)."""
    torch.manual_seed(seed)
    policy = M3DTPolicy(tiny_m3dt_config(**overrides)).eval()
    prompts = {task: m3dt_prompt(*widths, seed=i) for i, (task, widths) in enumerate(M3DT_TASKS.items())}
    card = {"name": name, "version": version, "targets": {"reach-v3": 7.5}}
    policy.save_pretrained(directory, card=card, prompts=prompts)
    return directory
