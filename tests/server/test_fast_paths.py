"""The act path's fast parts against the slow ones they stand in for: `server.json_codec` against
the standard library's ``json``, and the act body's plain check (`server.act.parse_act`) against
the pydantic model that documents it (`server.schemas.ActBody`), on generated inputs."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server import json_codec
from server.act import parse_act
from server.errors import ApiError
from server.payload import validate_body
from server.schemas import FLOAT32_MAX, ActBody

SPECIAL_NUMBERS = [0, -0.0, 1, -1, 0.5, 2**53 - 1, 2**53, 2**63, 2**64, 10**30, FLOAT32_MAX, 3.5e38, 1e300]
numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(SPECIAL_NUMBERS),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def canonical(value: Any) -> Any:
    """``value`` with every number tagged by its type (1 and 1.0 differ) and NaN made comparable."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return {k: canonical(v) for k, v in value.items()}


def outcome(fn: Any, *args: Any) -> Any:
    """What ``fn(*args)`` does: its canonical value, or the class of what it raised."""
    try:
        return ("value", canonical(fn(*args)))
    except (ValueError, TypeError, RecursionError, UnicodeDecodeError) as exc:
        return ("raises", type(exc))


texts = st.one_of(
    json_values.map(lambda v: json.dumps(v)),  # NaN / Infinity literals included
    st.lists(
        st.sampled_from(
            [
                '{"a":',
                "[",
                "]",
                "}",
                ",",
                "1",
                "-0",
                "1e400",
                "12345678901234567890",
                "0.1",
                '"x"',
                '"\\ud800"',
                "NaN",
                "true",
                "null",
                " ",
                "\ufeff",
                '"é"',
            ]
        ),
        max_size=8,
    ).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(texts, st.booleans())
def test_loads_reads_what_json_reads(text: str, as_bytes: bool) -> None:
    raw: bytes | str = text.encode("utf-8", "surrogatepass") if as_bytes else text
    assert outcome(json_codec.loads, raw) == outcome(json.loads, raw)


def test_loads_keeps_integers_beyond_64_bits_exact() -> None:
    assert json_codec.loads(b"[18446744073709551616, 1e400, 7]") == [2**64, math.inf, 7]


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_dumps_refuses_what_json_refuses_and_keeps_every_value(value: Any) -> None:
    strict = outcome(lambda v: json.dumps(v, allow_nan=False), value)
    fast = outcome(lambda v: json_codec.dumps(v).decode(), value)
    if strict[0] == "raises":
        assert fast == strict
    else:
        assert canonical(json.loads(json_codec.dumps(value))) == canonical(value)


def act_outcome(parse: Any, data: Any) -> Any:
    """A parsed act's values, or the 4xx it raised (status, code, message, field)."""
    try:
        body = parse(data)
    except ApiError as exc:
        return (exc.status, exc.code, exc.message, exc.field)
    return canonical([body.step, body.observation, body.reward, body.done])


act_values = st.one_of(numbers, st.lists(numbers, max_size=4), st.booleans(), st.none(), st.text(max_size=3))
act_bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["step", "observation", "reward", "done", "obs", "", "body", 1]),
        act_values,
        max_size=5,
    ),
    st.fixed_dictionaries(
        {
            "step": st.one_of(st.integers(-2, 2**54), st.sampled_from([2**53 - 1, 2**53])),
            "observation": st.one_of(numbers, st.lists(numbers, max_size=3)),
        },
        optional={"reward": st.one_of(st.none(), numbers), "done": st.booleans()},
    ),
    act_values,
)


@settings(max_examples=600, deadline=None)
@given(act_bodies)
def test_the_plain_act_check_is_act_body(data: Any) -> None:
    assert act_outcome(parse_act, data) == act_outcome(lambda d: validate_body(ActBody, d), data)


@pytest.mark.parametrize(
    "data",
    [
        {"step": 0, "observation": [0.5, 1]},
        {"step": 7, "observation": 2, "reward": -1, "done": True},
        {"step": 2**53 - 1, "observation": [FLOAT32_MAX, -FLOAT32_MAX], "reward": None, "done": False},
    ],
)
def test_bodies_clients_send_take_the_plain_check(data: dict[str, Any], monkeypatch) -> None:
    """The common bodies never reach pydantic (the point of the plain check)."""

    def no_pydantic(*args: Any) -> None:
        raise AssertionError("the body went to ActBody")

    monkeypatch.setattr("server.act.validate_body", no_pydantic)
    body = parse_act(data)
    assert type(body.observation) is list and all(type(v) is float for v in body.observation)
    assert body.reward is None or type(body.reward) is float
