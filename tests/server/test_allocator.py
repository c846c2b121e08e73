"""The server's malloc settings: applied on glibc, each one left alone when the environment gives it."""

from __future__ import annotations

import platform

import pytest

from server.allocator import MALLOC_OPTIONS, tune_malloc

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


def test_every_setting_is_applied_when_the_environment_gives_none():
    assert tune_malloc({}) == {option.env: option.value for option in MALLOC_OPTIONS}


def test_settings_from_the_environment_are_left_alone():
    environ = {"MALLOC_ARENA_MAX": "8", "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}
    assert tune_malloc(environ) == {"MALLOC_MMAP_THRESHOLD_": 128 * 1024}
