"""Agents a user can start: ``[agents.NAME]`` tables in devbox.toml, over the built-in
``claude`` (Claude Code through the image's ``start-claude``).

    [agents.claude]
    command = ["start-claude"]       # run in the worktree, as the container's user
    prompt = "arg"                   # "arg": the prompt is the last argument; "type": typed
                                     # into the agent once it runs; "none": not passed
    env = ["ANTHROPIC_API_KEY"]      # host variables only the agent's process receives
    hooks = "claude"                 # its state comes from Claude Code's hooks; "none": a
                                     # labelled guess from its terminal's activity
    egress = "allow"                 # where its environment may connect (core/egress.py):
                                     # "allow" (the default), "none" or "open"
    allow = ["api.anthropic.com"]    # the names it needs; [container] allow is added
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devbox.core import egress
from devbox.core.errors import ConfigError

PROMPT_MODES = ("arg", "type", "none")
HOOK_KINDS = ("claude", "none")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
AGENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class AgentSpec:
    name: str
    command: tuple[str, ...]
    prompt: str = "arg"
    env: tuple[str, ...] = ()
    hooks: str = "claude"
    # an agent gets only the names it needs by default, never the open internet
    egress: str = "allow"
    allow: tuple[str, ...] = ()


# Claude Code's own endpoints: the API, and the feature flags it asks at start
CLAUDE_ALLOW = ("api.anthropic.com", "statsig.anthropic.com")
BUILT_IN = {
    "claude": AgentSpec("claude", ("start-claude",), "arg", ("ANTHROPIC_API_KEY",), "claude", "allow", CLAUDE_ALLOW)
}


def parse(raw: object, path: Path) -> dict[str, AgentSpec]:
    """The agents: the built-in ones with devbox.toml's tables over them (one line per error)."""
    agents = dict(BUILT_IN)
    if raw in (None, {}):
        return agents
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: agents must be tables", 'write them as [agents.NAME] with command = ["..."]')
    for name, table in raw.items():
        where = f"{path.name} agents.{name}"
        if not AGENT_NAME.match(str(name)):
            raise ConfigError(f"{where}: {name!r} is not an agent name", "use a-z, 0-9, '-', '_' (e.g. claude)")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table", f'write it as [agents.{name}] with command = ["..."]')
        base = agents.get(name)
        unknown = set(table) - {"command", "prompt", "env", "hooks", "egress", "allow"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}",
                              "known keys: command, prompt, env, hooks, egress, allow")  # fmt: skip
        command = table.get("command", list(base.command) if base else None)
        if not isinstance(command, list) or not command or not all(isinstance(c, str) and c for c in command):
            raise ConfigError(f"{where}.command must be a non-empty list of strings", 'e.g. command = ["my-agent"]')
        prompt = table.get("prompt", base.prompt if base else "arg")
        if prompt not in PROMPT_MODES:
            raise ConfigError(f"{where}.prompt must be one of {', '.join(PROMPT_MODES)}", 'e.g. prompt = "arg"')
        env = table.get("env", list(base.env) if base else [])
        if not isinstance(env, list) or not all(isinstance(e, str) and ENV_NAME.match(e) for e in env):
            raise ConfigError(f"{where}.env must be a list of variable names", 'e.g. env = ["ANTHROPIC_API_KEY"]')
        hooks = table.get("hooks", base.hooks if base else "none")
        if hooks not in HOOK_KINDS:
            raise ConfigError(f"{where}.hooks must be one of {', '.join(HOOK_KINDS)}", 'e.g. hooks = "claude"')
        mode = table.get("egress", base.egress if base else "allow")
        if mode not in egress.MODES:
            raise ConfigError(f"{where}.egress must be one of {', '.join(egress.MODES)}", 'e.g. egress = "allow"')
        allow = table.get("allow", list(base.allow) if base else [])
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            raise ConfigError(f"{where}.allow must be a list of host names", 'e.g. allow = ["api.anthropic.com"]')
        try:
            rules = egress.parse_rules(allow)
        except egress.PolicyError as exc:
            raise ConfigError(f"{where}.allow: {exc}", 'e.g. allow = ["api.anthropic.com"]') from None
        agents[name] = AgentSpec(name, tuple(command), str(prompt), tuple(env), str(hooks), str(mode),
                                 tuple(r.text() for r in rules))  # fmt: skip
    return agents
