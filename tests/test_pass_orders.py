"""Unbreakable: any subset of the passes, in any order, over zoo models
gives an optimized model with parity (optimize() checks it) and never
raises. A pass that cannot cope with what an earlier one left is dropped
with its reason, not fatal."""
import random

import pytest

import tf_recopt
from grappler_passes import pipeline


def _orders(seed, count):
    rng = random.Random(seed)
    names = sorted(pipeline.available_passes())
    for _ in range(count):
        chosen = rng.sample(names, rng.randint(2, len(names)))
        yield chosen


@pytest.mark.parametrize("model,seed", [("dlrm", 1), ("din", 2), ("wdl", 3), ("dien", 4)])
def test_random_pass_orders_keep_parity(zoo_dir, tmp_path, ops, model, seed):
    src = zoo_dir(model)
    for i, order in enumerate(_orders(seed, 2)):
        report = tf_recopt.optimize(src, str(tmp_path / f"out{i}"), passes=order)
        assert report.parity_ok, (order, report)
        ran = [p.name for s in report.signatures.values() for p in s.passes]
        assert set(ran) == set(order)
