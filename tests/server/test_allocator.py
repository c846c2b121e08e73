"""The server's malloc settings: applied on glibc, a default left alone when the environment gives
it, a ``t2mir serve`` flag applied whatever the environment says."""

from __future__ import annotations

import argparse
import platform

import pytest

from server.allocator import MALLOC_OPTIONS, tune_malloc
from server.command import add_arguments, malloc_flags

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

DEFAULTS = {option.env: option.default for option in MALLOC_OPTIONS if option.default is not None}


def test_every_default_is_applied_when_the_environment_gives_none():
    assert tune_malloc({}) == DEFAULTS


def test_settings_from_the_environment_are_left_alone():
    environ = {"MALLOC_ARENA_MAX": "8", "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}
    expected = {k: v for k, v in DEFAULTS.items() if k not in ("MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_")}
    assert tune_malloc(environ) == expected


def test_serve_flags_override_the_environment_and_the_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--malloc-arena-max", "4", "--malloc-top-pad", str(1 << 20)])
    flags = malloc_flags(args)
    assert flags == {"MALLOC_ARENA_MAX": 4, "MALLOC_TOP_PAD_": 1 << 20}
    applied = tune_malloc({"MALLOC_ARENA_MAX": "8"}, flags)
    assert applied == {**DEFAULTS, **flags}
