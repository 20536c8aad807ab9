"""Which signature inputs are the parts of a RaggedTensor, so that parity and
benchmark inputs can be generated valid.

tf_keras flattens a ragged Input into flat values and one row_splits per
ragged dimension (`args_0`, `args_0_1`, `args_0_2` for ragged_rank 2).
Random tensors for those keys are not a RaggedTensor: the model's segment
sums reject them. The graph says how the keys relate. A segment sum whose
row ids probe as a signature input's row ids (grappler_passes.ragged_rows)
reduces rows counted by that input; what it reduces is a gather of another
input (flat values) or the output of a deeper reduction (inner row_splits).
A fused ragged lookup (Recopt>FusedEmbeddingLookup) names its values and
splits inputs directly.
"""
from typing import Callable, Dict, Optional

import numpy as np

from grappler_passes.ragged_rows import ragged_rows
from grappler_passes.graph_view import GraphView, parse_input
from grappler_passes.shapes import tensor_info
from custom_ops.spec.embedding import OP_NAME as EMBEDDING_OP, PARTITIONS_PER_LAYOUT

_GATHERS = frozenset({"GatherV2", "ResourceGather", "Gather"})
_MAX_DEPTH = 8   # nesting deeper than any ragged input a model takes


def ragged_parents(graph_def, sig) -> Dict[str, str]:
    """{key: splits key} for signature inputs measured by a row_splits input:
    flat values (length = splits[-1]) and inner row_splits (splits[-1] + 1
    entries) map to the row_splits one level out."""
    graph = _RaggedGraph(graph_def, sig)
    parents = {}
    for node in graph.view.nodes():
        if node.op == EMBEDDING_OP:
            parents.update(_fused_pairs(node, graph.key))
        elif node.op == "UnsortedSegmentSum":
            # What is reduced first: it is read off the graph, while the row
            # ids are probed by running them, which only a candidate pays.
            child = graph.rows_key(node.input[0], 0)
            outer = graph.splits_key(node) if child else None
            if outer and child != outer:
                parents[child] = outer
    return parents


class _RaggedGraph:
    """A graph's signature keys, with its shapes inferred (a whole-graph
    import) and each segment sum probed at most once, and only on demand:
    optimize() asks this of every signature, ragged or not."""

    def __init__(self, graph_def, sig):
        self.view = GraphView(graph_def)
        self._graph_def = graph_def
        self._info = None
        self._splits = {}
        self._key_of = {parse_input(self.view.source(t))[0]: k for k, t in sig.input_tensors.items()}

    def key(self, tensor) -> Optional[str]:
        return self._key_of.get(parse_input(self.view.source(tensor))[0])

    def splits_key(self, segment_sum) -> Optional[str]:
        """The signature input whose row ids `segment_sum` sums by, if a row_splits input."""
        if segment_sum.name not in self._splits:
            if self._info is None:
                self._info = tensor_info(self._graph_def)
            rows = ragged_rows(self.view, self._info, segment_sum.input[1], segment_sum.input[2])
            self._splits[segment_sum.name] = self.key(rows[1]) if rows is not None and rows[0] == "splits" else None
        return self._splits[segment_sum.name]

    def rows_key(self, tensor, depth) -> Optional[str]:
        """The signature input that counts the rows of `tensor`: the ids of a
        gather, the splits of a ragged reduction (a mean is sum / count)."""
        node = self.view.node(self.view.skip_identity(tensor))
        if node is None or depth > _MAX_DEPTH:
            return None
        if node.op in _GATHERS:
            return self.key(self.view.skip_identity(node.input[1]))
        if node.op == "UnsortedSegmentSum":
            return self.splits_key(node)
        if node.op in ("RealDiv", "Div"):
            return self.rows_key(node.input[0], depth + 1)
        if node.op == EMBEDDING_OP:
            splits = set(_fused_pairs(node, self.key).values())
            return splits.pop() if len(splits) == 1 else None
        return None


def _fused_pairs(node, key):
    """{values key: splits key} for the fused op's ragged features."""
    layouts = [l.decode() for l in node.attr["layouts"].list.s]
    tables = len(node.attr["Ttables"].list.type)
    part = tables + len(layouts)
    pairs = {}
    for f, layout in enumerate(layouts):
        if layout == "ragged":
            values, splits = key(node.input[tables + f]), key(node.input[part])
            if values and splits:
                pairs[values] = splits
        part += PARTITIONS_PER_LAYOUT[layout]
    return pairs


def ragged_splits(parents: Dict[str, str], batch_size: int, draw: Callable[[int], np.ndarray]):
    """{splits key: row_splits} with `batch_size` rows at the outermost level
    and each inner level as many rows as the level out holds values;
    draw(rows) gives the rows' lengths."""
    splits = {}

    def of(key, depth=0):
        if key not in splits:
            if depth > _MAX_DEPTH:
                raise ValueError(f"signature input '{key}': its row_splits nest in a cycle")
            rows = int(of(parents[key], depth + 1)[-1]) if key in parents else batch_size
            splits[key] = np.concatenate([[0], np.cumsum(draw(rows))]).astype(np.int64)
        return splits[key]
    for key in sorted(set(parents.values())):
        of(key)
    return splits
