"""Dockerfile and .dockerignore (no Docker engine here: static checks, plus the claim the image
relies on, that the serving path runs without the training stack)."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from server_process import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def instructions(keyword: str) -> list[str]:
    """Arguments of every instruction ``keyword`` (continuation lines joined)."""
    return [line.split(None, 1)[1] for line in INSTRUCTIONS if line.split(None, 1)[0].upper() == keyword]


def test_multi_stage_with_cuda_default_and_cpu_build_args():
    stages = instructions("FROM")
    assert len(stages) >= 3
    assert stages[0].startswith("${BASE}")
    args = dict(a.split("=", 1) if "=" in a else (a, "") for a in instructions("ARG"))
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu22\.04", args["BASE"])
    assert "TORCH_INDEX" in args and "DEVICE" in args
    assert "python3.11" in DOCKERFILE
    assert any("--index-url" in run and "${TORCH_INDEX}" in run for run in instructions("RUN"))


def test_installs_server_and_client_extras_only():
    installs = [run for run in instructions("RUN") if 'pip install ".[' in run]
    assert installs and all('".[server,client]"' in run for run in installs)
    assert "train" not in " ".join(installs)
    copied = [c.split()[0] for c in instructions("COPY") if not c.startswith("--")]
    assert "training" not in {c.rstrip("/") for c in copied}


def test_runtime_user_port_healthcheck_entrypoint_checkpoints():
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert instructions("EXPOSE") == ["8000"]
    (healthcheck,) = instructions("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"] and "/healthz" in command[2]
    compile(command[2], "healthcheck", "exec")
    assert json.loads(instructions("ENTRYPOINT")[-1]) == ["t2mir", "serve"]
    assert "checkpoints/ /opt/t2mir/checkpoints/" in instructions("COPY")
    env = " ".join(instructions("ENV"))
    for setting in ("T2MIR_HOST=0.0.0.0", "T2MIR_PORT=8000", "T2MIR_CHECKPOINTS=", "T2MIR_DEVICE=${DEVICE}"):
        assert setting in env


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``*`` and ``?`` stay inside one path segment, ``**``
    spans any number of them (Go's filepath.Match plus Docker's ``**``)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last rule matching the
    path or one of its parent folders wins (``!`` rules re-include)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    excluded = False
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        regex = glob_regex(line.lstrip("!").rstrip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not line.startswith("!")
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "t2mir_model/t2mir/modeling.py",
        "server/app.py",
        "clients/http.py",
        "checkpoints/darkroom-t2mir-ad/model.safetensors",
        "checkpoints/darkroom-t2mir-ad/config.json",
        "checkpoints/darkroom-t2mir-ad/card.json",
    ],
)
def test_dockerignore_keeps_what_the_image_needs(path):
    assert not dockerignore_excludes(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "data/darkroom-mixed/train_000.npz",
        "runs/darkroom-t2mir-ad-cpu/last/model.safetensors",
        ".git/HEAD",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        "server/__pycache__/app.cpython-311.pyc",
        "tests/deploy/test_dockerfile.py",
        "training/envs/darkroom.py",
        "deploy/docker-compose.yml",
        "checkpoints/darkroom-t2mir-ad/trainer.pt",
        "t2mir.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_excludes_the_rest(path):
    assert dockerignore_excludes(path)


def test_every_copied_path_is_in_the_build_context():
    for copy in instructions("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _ = shlex.split(copy)
        for source in sources:
            assert (REPO_ROOT / source).exists() or source.rstrip("/") == "checkpoints", source
            assert not dockerignore_excludes(source.rstrip("/") or "."), f"{source} is in .dockerignore"


def test_serving_path_needs_no_training_stack(monitored):
    """The session's server ran with training/gymnasium/... unimportable and served acts."""
    assert monitored.blocked_imports.exists(), "the no-training sitecustomize did not run"
    assert monitored.blocked_imports.read_text() == "", "the server imported the training stack"
    assert monitored.server.running
