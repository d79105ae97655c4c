"""Plain-Python loop references shared by several loss tests (no calls into our code)."""

from __future__ import annotations

import math

Vec = list[float]


def normed(v: Vec) -> Vec:
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def dot(a: Vec, b: Vec) -> float:
    return sum(x * y for x, y in zip(a, b))


def ref_nt_xent(view1: list[Vec], view2: list[Vec], t: float) -> float:
    """Mean over the 2n rows of -log exp(s_pos/t) / sum_{k != i} exp(s_ik/t) (SimCLR eq. 1)."""
    z = [normed(v) for v in view1 + view2]
    n = len(view1)
    rows = []
    for i in range(2 * n):
        denom = sum(math.exp(dot(z[i], z[k]) / t) for k in range(2 * n) if k != i)
        rows.append(-math.log(math.exp(dot(z[i], z[(i + n) % (2 * n)]) / t) / denom))
    return sum(rows) / (2 * n)
