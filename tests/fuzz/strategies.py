"""Shared settings and strategies of the fuzz tests.

`make test` runs a modest number of examples per property; MDMSCEP_TEST_LONG=1 (make test-long)
runs ten times as many, MDMSCEP_FUZZ_EXAMPLES sets the number outright."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG = os.environ.get("MDMSCEP_TEST_LONG", "") not in ("", "0")
EXAMPLES = int(os.environ.get("MDMSCEP_FUZZ_EXAMPLES") or (1500 if LONG else 150))


def fuzz(examples: int | None = None, scale: float = 1.0):
    return settings(max_examples=examples or max(10, int(EXAMPLES * scale)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def mutations(data: bytes, tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    """`data` with a few random edits: bytes flipped, ranges deleted or duplicated, and tokens
    (XML constructs, Fleet variables) inserted at random places."""
    edit = st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 255)),
        st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 64)),
        st.tuples(st.just("duplicate"), st.integers(0, 1 << 20), st.integers(1, 64)),
        st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.sampled_from(tokens)),
        st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    )

    def apply(edits) -> bytes:
        out = bytearray(data)
        for kind, position, arg in edits:
            if not out:
                break
            at = position % len(out)
            if kind == "flip":
                out[at] = arg
            elif kind == "delete":
                del out[at:at + arg]
            elif kind == "duplicate":
                out[at:at] = out[at:at + arg]
            elif kind == "insert":
                out[at:at] = arg
            elif kind == "truncate":
                del out[at:]
        return bytes(out)

    return st.lists(edit, min_size=1, max_size=6).map(apply)
