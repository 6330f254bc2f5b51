"""The rule of attention restricted to a pattern, for NaN and inf: a query's output (and its weights)
depend on its own q and on the k, v of the tokens its pattern gives it, and on nothing else.

So a NaN or an inf placed in one token's q, k or v reaches exactly the queries that see it: the
expected sets come from the brute-force key table (tests/brute.py, written from docs/semantics.md),
checked against ``pattern.mask``; every other query's output and weights stay those of the clean run.
"""

import warnings

import pytest
import torch
from test_attend import FAST, qkv

from vizattn import attend

import brute
from cases import CASES, IDS

# (where, value): inf in k meets a positive q component, so its logit is +inf and the softmax NaN
POISONS = [("q", "nan"), ("k", "nan"), ("v", "nan"), ("q", "inf"), ("k", "inf"), ("v", "inf")]


def seen_by(spec_h, spec_w, H, W, table=None):
    """``BoolTensor [N, N]``: ``seen[n, j]`` iff token j is one of query n's keys, from brute.py's table
    (or ``table``, one in its format)."""
    seen = torch.zeros(H * W, H * W, dtype=torch.bool)
    for n, row in enumerate(table or brute.slots(spec_h, spec_w, H, W)):
        for key, _ in row:
            if key is not None:
                seen[n, key] = True
    return seen


def backends_for(pattern):
    # flex: forward only, no weights, no zero slots (it runs on CPU unfused)
    return FAST + ([] if pattern.zero_slots else ["flex"])


def run(q, k, v, pattern, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # flex's unfused eager path on CPU
        if backend == "flex":
            return attend(q, k, v, pattern, backend=backend), None
        return attend(q, k, v, pattern, backend=backend, return_weights=True)


@pytest.mark.parametrize("where, value", POISONS, ids=[f"{v} in {w}" for w, v in POISONS])
@pytest.mark.parametrize("pattern, spec_h, spec_w, H, W", CASES, ids=IDS)
def test_a_nonfinite_value_reaches_exactly_the_queries_that_see_it(pattern, spec_h, spec_w, H, W, where, value):
    check_reach(pattern, seen_by(spec_h, spec_w, H, W), H, W, where, value)


def check_reach(pattern, seen, H, W, where, value):
    """The rule on every backend for ``pattern``, whose key sets ``seen [N, N]`` come from a brute-force table."""
    assert torch.equal(seen, pattern.mask(H, W))  # the two descriptions of the pattern agree
    q, k, v = qkv(2, 2, H, W, 4)
    q[..., 0], k[..., 0] = q[..., 0].abs() + 0.5, k[..., 0].abs() + 0.5  # every q . k term on axis 0 positive
    excluded = (pattern.keys(H, W) < 0) & (not pattern.zero_slots)  # [N, K]: slots without a key
    N = H * W
    clean = {backend: run(q, k, v, pattern, backend) for backend in backends_for(pattern)}
    for token in sorted({0, N // 2 + 1, N - 1}):
        poisoned = dict(q=q.clone(), k=k.clone(), v=v.clone())
        poisoned[where].view(2, 2, N, 4)[:, :, token] = float(value)
        reached = torch.zeros(N, dtype=torch.bool)  # the queries this value must reach
        reached[token] = where == "q"
        if where != "q":
            reached |= seen[:, token]
        for backend in backends_for(pattern):
            out0, w0 = clean[backend]
            out, w = run(*poisoned.values(), pattern, backend)
            out, out0 = out.flatten(2, 3), out0.flatten(2, 3)  # [B, heads, N, d]
            assert (~out[:, :, reached].isfinite()).all(), (backend, token, "a query that sees it stays finite")
            torch.testing.assert_close(out[:, :, ~reached], out0[:, :, ~reached], msg=f"{backend}, token {token}")
            if w is None:
                continue
            w, w0 = w.flatten(2, 3), w0.flatten(2, 3)  # [B, heads, N, K]
            assert (w[..., excluded] == 0).all()  # a slot without a key always weighs 0
            if where == "v":  # weights do not read v
                torch.testing.assert_close(w, w0)
                continue
            included = w[:, :, reached][..., ~excluded[reached]]
            assert (~included.isfinite()).all(), (backend, token, "weights of a query that sees it stay finite")
            torch.testing.assert_close(w[:, :, ~reached], w0[:, :, ~reached], msg=f"{backend}, token {token}")
