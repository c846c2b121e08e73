"""Every deployment command that README.md and deploy/README.md show, run as written where the
tools exist here.

Commands are taken from the fenced code blocks and the inline code spans of both documents: each
`docker compose ...` / `docker-compose ...` (with any `VAR=value` prefix, `export`ed variables and
`cd` of its block) becomes one `docker-compose <its files and profiles> config` run in the directory
the document says, which must succeed without warnings; the resolved stack must start a server,
publish no host port twice, scrape targets that exist, and hold every service the command names.
Each `t2mir-client run ...` runs against a real server loaded with the compose stack's checkpoints
(only `--server` and `--episodes` are changed), so a command that would get a 422 or needs a
missing package fails here. Building images and `up` need a Docker engine: deploy/smoke.sh.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml
from server_process import REPO_ROOT, ServerProcess

DEPLOY = REPO_ROOT / "deploy"
DOCS = {REPO_ROOT / "README.md": REPO_ROOT, DEPLOY / "README.md": DEPLOY}
"""Each document and the directory its commands run in (deploy/README.md: "run in `deploy/`")."""

COMPOSE_VALUE_OPTIONS = {
    "-f",
    "--file",
    "--profile",
    "-p",
    "--project-name",
    "--env-file",
    "--project-directory",
}
SUBCOMMAND_OPTIONS: dict[str, tuple[set[str], set[str]]] = {
    # subcommand: (flags, options taking a value). Services are the remaining words.
    "up": ({"-d", "--detach", "--build", "--no-build", "--force-recreate", "--remove-orphans", "--wait"}, {"-t", "--timeout", "--scale"}),
    "down": ({"-v", "--volumes", "--remove-orphans"}, {"-t", "--timeout", "--rmi"}),
    "restart": (set(), {"-t", "--timeout"}),
    "stop": (set(), {"-t", "--timeout"}),
    "start": (set(), set()),
    "build": ({"--no-cache", "--pull"}, set()),
    "pull": (set(), set()),
    "logs": ({"-f", "--follow", "--no-color"}, {"--tail"}),
    "ps": ({"-a", "--all", "-q", "--quiet", "--services"}, set()),
    "config": ({"-q", "--quiet", "--services", "--volumes", "--profiles"}, set()),
    "exec": ({"-T"}, {"-u", "--user", "-e", "--env"}),
}  # fmt: skip
COMPOSE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}
"""A clean environment for `docker-compose config` (no T2MIR_* of the developer's shell)."""


@dataclass(frozen=True)
class Documented:
    """One documented command: where it is written, the directory it runs in, its words."""

    source: str
    cwd: Path
    env: tuple[tuple[str, str], ...]
    words: tuple[str, ...]

    def __str__(self) -> str:
        prefix = " ".join(f"{k}={v}" for k, v in self.env)
        return f"{self.source}: {prefix + ' ' if prefix else ''}{shlex.join(self.words)}"


@dataclass
class ComposeCommand:
    """A compose command split into its global options, subcommand and service names."""

    documented: Documented
    files: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    globals_: list[str] = field(default_factory=list)
    subcommand: str = ""
    services: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return dict(self.documented.env)

    @property
    def enabled_profiles(self) -> set[str]:
        return {*self.profiles, *filter(None, self.env.get("COMPOSE_PROFILES", "").split(","))}

    @property
    def combination(self) -> tuple[Path, tuple[str, ...]]:
        """What `config` depends on: directory, global options and the variables compose reads."""
        env = tuple(sorted(self.env.items()))
        return self.documented.cwd, (*self.globals_, *(f"{k}={v}" for k, v in env))


SHELL_LINE = re.compile(r"^\s*(cd|export)\s|docker compose|docker-compose|t2mir-client")
"""Lines worth splitting as shell (code blocks also hold Python, JSON and program output)."""


def split_commands(text: str) -> list[list[str]]:
    """Shell lines of a code block (continuations joined, comments dropped) split at `&&` / `;`."""
    commands: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if not SHELL_LINE.search(line):
            continue
        words: list[str] = []
        for word in shlex.split(line, comments=True):
            if word in ("&&", ";", "||"):
                commands.append(words)
                words = []
            else:
                words.append(word)
        commands.append(words)
    return [c for c in commands if c]


def snippets(text: str) -> list[str]:
    """The fenced code blocks of a Markdown text, then its inline code spans."""
    fence = r"^```[\w-]*\n(.*?)^```"
    prose = re.sub(fence, "", text, flags=re.S | re.M)
    return [*re.findall(fence, text, re.S | re.M), *re.findall(r"`([^`\n]+)`", prose)]


def documented_commands() -> list[Documented]:
    """Every compose command of both documents, and every client command shown against the compose
    stack (deploy/README.md, and README.md's Deployment section)."""
    found: list[Documented] = []
    for doc, base in DOCS.items():
        name = doc.relative_to(REPO_ROOT).as_posix()
        for section in re.split(r"^(?=## )", doc.read_text(), flags=re.M):
            stack_clients = doc.parent == DEPLOY or section.startswith("## Deployment\n")
            for snippet in snippets(section):
                cwd, exported = base, {}
                for words in split_commands(snippet):
                    if words[0] == "cd":
                        cwd = (cwd / words[1]).resolve()
                        continue
                    if words[0] == "export":
                        exported.update(w.split("=", 1) for w in words[1:])
                        continue
                    env = dict(exported)
                    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                        key, value = words.pop(0).split("=", 1)
                        env[key] = value
                    compose = words[:2] == ["docker", "compose"] or words[:1] == ["docker-compose"]
                    client = words[:1] == ["t2mir-client"] and len(words) > 2 and stack_clients
                    if compose or client:
                        found.append(Documented(name, cwd, tuple(env.items()), tuple(words)))
    return found


def parse_compose(documented: Documented) -> ComposeCommand | None:
    """The compose command's parts; None for a span that only names the tool (`docker compose`)."""
    words = list(documented.words)
    words = words[2:] if words[0] == "docker" else words[1:]
    command = ComposeCommand(documented)
    while words and words[0].startswith("-"):
        option = words.pop(0)
        assert option in COMPOSE_VALUE_OPTIONS, f"{documented}: unknown global option {option}"
        value = words.pop(0)
        command.globals_ += [option, value]
        if option in ("-f", "--file"):
            command.files.append(value)
        elif option == "--profile":
            command.profiles.append(value)
    if not words:
        return None
    command.subcommand = words.pop(0)
    assert command.subcommand in SUBCOMMAND_OPTIONS, f"{documented}: subcommand not known to this test"
    flags, valued = SUBCOMMAND_OPTIONS[command.subcommand]
    while words:
        word = words.pop(0)
        if word in valued:
            words.pop(0)
        elif word.startswith("-"):
            assert word in flags, f"{documented}: option {word} not known to this test"
        else:
            command.services.append(word)
            if command.subcommand == "exec":
                break  # the rest is the command run in the container
    return command


DOCUMENTED = documented_commands()
COMPOSE = [c for c in map(parse_compose, (d for d in DOCUMENTED if d.words[0] != "t2mir-client")) if c]
CLIENT = [d for d in DOCUMENTED if d.words[0] == "t2mir-client"]
COMBINATIONS = {c.combination: c for c in COMPOSE}
"""One compose command per distinct combination of directory, files, profiles and environment."""


@cache
def resolved(combination: tuple[Path, tuple[str, ...]]) -> subprocess.CompletedProcess[str]:
    """`docker-compose <global options> config` of one combination, run once."""
    command = COMBINATIONS[combination]
    binary = next(p for p in ("/usr/bin/docker-compose", "/usr/local/bin/docker-compose") if Path(p).exists())
    return subprocess.run(
        [binary, *command.globals_, "config"],
        cwd=command.documented.cwd,
        env={**COMPOSE_ENV, **command.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def active_services(command: ComposeCommand) -> dict[str, dict]:
    """Services that the command's `up` starts: those without a profile or with an enabled one."""
    run = resolved(command.combination)
    assert run.returncode == 0, f"{command.documented}\n{run.stderr}"
    services = yaml.safe_load(run.stdout)["services"]
    enabled = command.enabled_profiles
    return {n: s for n, s in services.items() if not s.get("profiles") or enabled & set(s["profiles"])}


def published(service: dict) -> list[tuple[str, str, str]]:
    """(host ip, host port, protocol) of every published port of a resolved service."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", "")), port.get("protocol", "tcp")))
            continue
        match = re.fullmatch(r"(?:(?P<ip>[\d.]*):)?(?P<host>\d+)?:?(?P<target>\d+)(?:/(?P<proto>\w+))?", port)
        assert match, f"unparsed port {port!r}"
        if match["host"]:
            out.append((match["ip"] or "", match["host"], match["proto"] or "tcp"))
    return out


def ids(commands: list) -> list[str]:
    return [str(c.documented if isinstance(c, ComposeCommand) else c) for c in commands]


def test_both_documents_show_compose_commands_for_v1_and_v2():
    assert {c.documented.source for c in COMPOSE} == {"README.md", "deploy/README.md"}
    spellings = {c.documented.words[0] for c in COMPOSE}
    assert spellings == {"docker", "docker-compose"}, "show `docker compose` (v2) and `docker-compose` (v1)"
    plain = [
        c
        for c in COMPOSE
        if c.subcommand == "up" and not c.globals_ and not c.env and c.documented.cwd == DEPLOY
    ]
    assert plain, "deploy/README.md shows the plain `docker compose up` in deploy/"
    assert CLIENT, "the quick start shows a client command"


@pytest.mark.parametrize("command", list(COMBINATIONS.values()), ids=ids(list(COMBINATIONS.values())))
def test_documented_combination_is_valid(command):
    """`docker-compose <files, profiles, environment> config` accepts it, without warnings."""
    run = resolved(command.combination)
    assert run.returncode == 0, f"{command.documented}:\n{run.stderr}"
    assert "WARN" not in run.stderr, f"{command.documented}:\n{run.stderr}"


def reachable_names(services: dict[str, dict]) -> set[str]:
    """Host names other containers reach: the service names and their network aliases."""
    aliases = {
        alias
        for service in services.values()
        for network in (service.get("networks") or {}).values()
        for alias in (network or {}).get("aliases", [])
    }
    return set(services) | aliases


def scrape_hosts(services: dict[str, dict]) -> set[str]:
    """Host names of every scrape target of the Prometheus config the stack mounts."""
    (mount,) = [v for v in services["prometheus"]["volumes"] if ":/etc/prometheus/prometheus.yml" in v]
    scrape = yaml.safe_load(Path(mount.split(":")[0]).read_text())
    return {
        target.rsplit(":", 1)[0]
        for job in scrape["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }


@pytest.mark.parametrize("command", list(COMBINATIONS.values()), ids=ids(list(COMBINATIONS.values())))
def test_documented_combination_starts_a_scraped_server_without_port_clash(command):
    services = active_services(command)
    owners: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for name, service in services.items():
        for ip, port, proto in published(service):
            owners.setdefault((port, proto), []).append((name, ip))
    for (port, proto), users in owners.items():
        ips = [ip for _, ip in users]
        clash = len(users) > 1 and (len(set(ips)) < len(ips) or bool({"", "0.0.0.0"} & set(ips)))
        assert not clash, f"{command.documented}: host port {port}/{proto} published by {users}"
    assert ("8000", "tcp") in owners, f"{command.documented}: nothing publishes the API port 8000"
    assert {"server", "nginx"} & set(services), f"{command.documented}: no server"
    missing = scrape_hosts(services) - reachable_names(services) - {"localhost"}
    assert not missing, f"{command.documented}: Prometheus scrapes {missing}, which do not run"


@pytest.mark.parametrize(
    "command", [c for c in COMPOSE if c.services], ids=ids([c for c in COMPOSE if c.services])
)
def test_documented_command_names_services_of_its_stack(command):
    services = active_services(command)
    for name in command.services:
        assert name in services, f"{command.documented}: no running service {name!r} ({sorted(services)})"


def test_plain_docker_compose_up_starts_the_server(tools):
    """`docker compose up` with no file, profile or variable: Redis, the CPU server, Prometheus, Grafana."""
    run = subprocess.run(
        [tools.path("docker-compose"), "config", "--services"],
        cwd=DEPLOY,
        env=COMPOSE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert {"redis", "server", "prometheus", "grafana"} <= set(run.stdout.split())
    plain = ComposeCommand(Documented("plain", DEPLOY, (), ("docker", "compose", "up")), subcommand="up")
    COMBINATIONS.setdefault(plain.combination, plain)
    services = active_services(plain)
    assert {"redis", "server", "prometheus", "grafana"} <= set(services)
    assert services["server"]["environment"]["T2MIR_DEVICE"] == "cpu"
    assert services["server"]["build"]["args"]["TORCH_INDEX"].endswith("/whl/cpu")


def client_entry_point() -> str:
    """The `t2mir-client` console script's `module:function` (from pyproject.toml)."""
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts["t2mir-client"]


def stack_checkpoints() -> list[Path]:
    """The checkpoints the plain compose stack loads, as repo paths (the image copies checkpoints/)."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    value = compose["services"]["server"]["environment"]["T2MIR_CHECKPOINTS"]
    default = re.fullmatch(r"\$\{T2MIR_CHECKPOINTS:-(.*)\}", value)
    paths = (default[1] if default else value).split(",")
    assert all(p.startswith("/opt/t2mir/checkpoints/") for p in paths), paths
    return [REPO_ROOT / "checkpoints" / Path(p).name for p in paths]


@pytest.fixture(scope="module")
def stack_server():
    """A real server with the compose stack's checkpoints (in-process store)."""
    with ServerProcess(stack_checkpoints()) as server:
        server.start()
        yield server


@pytest.mark.parametrize("documented", CLIENT, ids=ids(CLIENT))
def test_documented_client_command_runs_against_the_stack_server(documented, stack_server):
    """The quick-start client command, against a server loading what the stack loads (three
    models): it names a loaded model and its environment is installable, so it runs."""
    assert documented.words[1] == "run", documented
    words = list(documented.words[2:])
    for option, value in (("--server", stack_server.url), ("--episodes", "1")):
        assert option in words, f"{documented}: no {option}"
        words[words.index(option) + 1] = value
    names = {json.loads((c / "card.json").read_text())["name"] for c in stack_checkpoints()}
    assert len(names) > 1 and "--model" in words, "the stack loads several models: name one"
    assert words[words.index("--model") + 1] in names
    module, function = client_entry_point().split(":")
    run = subprocess.run(
        [sys.executable, "-c", f"import sys; from {module} import {function} as m; sys.exit(m())", "run", *words],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, f"{documented}:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
