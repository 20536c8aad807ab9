"""A model whose embedding tables total more than 2 GiB (GraphDef's protobuf
limit) optimizes, reloads and keeps its answers: big tables must stay
variables, never become constants."""
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

import tf_recopt
from tests.conftest import REPO

ROWS, DIM, TABLES = 4_500_000, 64, 2  # 2 x 1.07 GiB
_EXPORT = f"""
import sys, tensorflow as tf
class Big(tf.Module):
    def __init__(self):
        super().__init__()
        self.tables = [tf.Variable(tf.random.stateless_uniform([{ROWS}, {DIM}], seed=[i, 1]), name=f"table_{{i}}")
                       for i in range({TABLES})]
        self.w = tf.Variable(tf.random.stateless_normal([{DIM * TABLES}, 8], seed=[7, 7]))
        self.b = tf.Variable(tf.zeros([8]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="id_0"),
                                  tf.TensorSpec([None], tf.int64, name="id_1")])
    def serve(self, id_0, id_1):
        x = tf.concat([tf.gather(self.tables[0], id_0), tf.gather(self.tables[1], id_1)], axis=1)
        return {{"out": tf.nn.relu(tf.matmul(x, self.w) + self.b)}}
m = Big()
tf.saved_model.save(m, sys.argv[1], signatures={{"serving_default": m.serve}})
"""


def test_tables_over_2gib_optimize_and_load(ops, tmp_path):
    src, out = str(tmp_path / "big"), str(tmp_path / "big_opt")
    subprocess.run([sys.executable, "-c", _EXPORT, src], check=True, cwd=REPO)
    report = tf_recopt.optimize(src, out)
    assert report.parity_ok
    assert sorted(report.kept_variables) == ["table_0:0", "table_1:0"]
    ops_after = report.signatures["serving_default"].ops_after
    assert ops_after.get("Recopt>FusedMLP") == 1
    assert ops_after.get("Recopt>FusedEmbeddingLookup") == 1 and "ResourceGather" not in ops_after
    assert os.path.getsize(os.path.join(out, "saved_model.pb")) < 10 << 20
    ids = {"id_0": tf.constant([0, ROWS - 1, 12345], tf.int64), "id_1": tf.constant([ROWS - 1, 0, 7], tf.int64)}
    got = tf.saved_model.load(out).signatures["serving_default"](**ids)["out"].numpy()
    want = tf.saved_model.load(src).signatures["serving_default"](**ids)["out"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
