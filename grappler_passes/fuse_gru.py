r"""A GRU layer's While loop -> Recopt>GRU.

Keras (3 and tf_keras) and hand-written recurrences export a GRU as

   x [B, T, d] -> Transpose([1, 0, 2]) [-> ReverseV2 when go_backwards]
        -> TensorListFromTensor ---------------------------------+
   h0 (Fill zeros or initial_state) ---------------------------+ |
   TensorListReserve -----------------------------------------+ | |
   counter 0, time 0, bounds, kernels (loop invariants) ----> (Stateless)While
        while:<list> -> TensorListStack [T, B, u] [-> Transpose([1, 0, 2])]
        while:<state> -> last state [B, u]

DIEN's AUGRU has the same loop: its attention score is the step input's
last column (Keras 3's RNN takes one sequence), or a second [B, T, 1] list
read at the same step (hand-written loops); it becomes the op's attention
input. The body (a library function) must compute one GRU step from the list item
at `time` and the state (grappler_passes/gru_cell.py reads the weights out
of it), write the new state at `time` (or at 0 into a one-slot list, Keras'
return_sequences=False), and advance time and the counter by one; the cond
must stop exactly at T. The rewrite feeds x (or the time-major list source)
to one Recopt>GRU and points the stack, its transpose and the last state at
the op's outputs. What it orphans is pruned by the pipeline. The loop variables are read in
gru_loop.py, the step in gru_cell.py, and the rewrite is gru_emit.py.
"""
import dataclasses
from typing import Optional

import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes import gru_cell, gru_emit, shapes
from grappler_passes.graph_view import parse_input, scalar_of
from grappler_passes.gru_loop import COND_OPS, WHILE_OPS, LoopVariables, body_node, body_ref
from grappler_passes.pass_base import GraphPass, SkipMatch


class FuseGru(GraphPass):
    name = "fuse_gru"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only so far
    description = "Keras/tf_keras GRU While loop (reset_after both ways) -> Recopt>GRU"

    def run(self, ctx, result):
        view = ctx.view
        loops = [n for n in view.nodes() if n.op in WHILE_OPS]
        if not loops:
            return
        info = view.tensor_info()
        library = {f.signature.name: f for f in view.graph_def.library.function}
        bf16 = ctx.precision("dense") == "bf16"
        for node in loops:
            try:
                match = GruMatch(view, info, library, node)
                plan = match.match()
            except SkipMatch as why:
                result.skip(node.name, str(why))
                continue
            gru_emit.GruEmitter(match).emit(plan, bf16)
            result.apply()


@dataclasses.dataclass
class GruPlan:
    x: str                   # the op's input, in the layout time_major says
    time_major: bool
    weights: gru_cell.GruWeights
    stacks: list             # the TensorListStack nodes the op's sequence replaces
    score: Optional[tuple]   # AUGRU: (tensor, column) of the attention score
    mask: Optional[tuple]    # ("tensor", [B, T] bool) or ("squeeze", [T, B, 1] bool)


class GruMatch(LoopVariables):
    """A GRU While loop's plan: the loop variables (LoopVariables), the
    outer graph around the loop (inputs start at 0, the cond stops at T,
    the lists come from the sequence) and the cell (gru_cell)."""

    def match(self):
        """The GruPlan, or SkipMatch with the reason; reads only."""
        self._roles()
        sources, time_major, steps = self._source()
        self._check_start()
        self._check_cond(steps)
        weights = self._cell(sources)
        stacks = self._stack()
        if any(s.name in self.view.protected for s in stacks):
            raise SkipMatch("the stacked sequence is itself a signature output")
        x, score = self._op_sources(sources, weights)
        mask = None if self.mask_list is None else self._mask_source(time_major)
        return GruPlan(x, time_major, weights, stacks, score, mask)

    def _producer(self, i, ops):
        node = self.view.node(self.inputs[i])
        if node is None or node.op not in ops:
            raise SkipMatch(f"loop input {i} ({self.inputs[i]}) is not a {' or '.join(ops)}")
        return node

    def _outer_const(self, i):
        name, port = parse_input(self.inputs[i])
        node = self.view.node(name)
        if node is not None and node.op == "Unpack":
            value = self.view.const_value(node.input[0])
            return None if value is None else np.moveaxis(value, node.attr["axis"].i, 0)[port]
        if node is not None and node.op == "Max":
            return _static_max(self.view, node)
        return self.view.const_value(self.inputs[i]) if port == 0 else None

    def _source(self):
        """(sources, time_major, steps): the tensor behind each step-input
        list, with its static width, in the layout the op reads, and static T."""
        sources, layouts, steps, self.srcs = [], set(), set(), []
        for i in self.input_lists:
            unstack = self._producer(i, ("TensorListFromTensor",))
            if unstack.attr["element_dtype"].type != types_pb2.DT_FLOAT:
                raise SkipMatch("the step input is not float32")
            src = unstack.input[0]
            shape = shapes.shape_of(self.info, src)
            if shape is None or len(shape) != 3 or shape[2] is None:
                raise SkipMatch(f"the loop input {src} is not a rank-3 tensor of static width")
            self.srcs.append(src)
            steps.add(shape[0])
            node = self.view.node(src)
            if node is not None and node.op == "Transpose":
                perm = self.view.const_value(node.input[1])
                if perm is not None and list(perm) == [1, 0, 2]:
                    sources.append((node.input[0], shape[2]))
                    layouts.add(False)
                    continue
            sources.append((src, shape[2]))
            layouts.add(True)
        if len(layouts) != 1 or len(steps) != 1:
            raise SkipMatch("the step inputs differ in layout or length")
        return sources, layouts.pop(), steps.pop()

    def _check_start(self):
        for i in [self.time] + self.counters:
            value = self._outer_const(i)
            if value is None or value.size != 1 or int(value.reshape(-1)[0]) != 0:
                raise SkipMatch(f"loop variable {i} does not start at 0")
        self._producer(self.out_list, ("TensorListReserve",))
        if self.out_carry is not None and not self._is_zeros(self.inputs[self.out_carry]):
            raise SkipMatch("the masked loop's output does not start from zeros")

    def _check_cond(self, steps):
        bounded = False
        self.cond_args = [a.name for a in self.cond.signature.input_arg]
        for n in self.cond.node_def:
            if n.op not in COND_OPS:
                raise SkipMatch(f"the loop condition uses {n.op}, not only `time < T` and `counter < max`")
            if n.op != "Less":
                continue
            var, bound = (body_ref(self.cond, i) for i in n.input[:2])
            if var not in self.cond_args:
                raise SkipMatch(f"the loop condition compares {var}, not a loop counter")
            i = self.cond_args.index(var)
            limit = self._cond_bound(bound, steps)
            if i == self.time and limit == "T":
                bounded = True
            elif not (i in self.counters and limit is not None and (limit == "T" or limit >= (steps or np.inf))):
                raise SkipMatch(f"the loop condition's bound on {var} is not the sequence length")
        if not bounded:
            raise SkipMatch("the loop does not stop at `time < T`")

    def _cond_bound(self, ref, steps):
        """"T" when the bound is the sequence length, else its static value or None."""
        if ref in self.cond_args:
            i = self.cond_args.index(ref)
            if self._is_length_of_source(self.inputs[i]):
                return "T"
            value = self._outer_const(i)
        else:
            node = body_node(self.cond, ref)
            value = scalar_of(node)
        if value is None:
            return None
        value = int(np.asarray(value).reshape(-1)[0])
        return "T" if steps is not None and value == steps else value

    def _is_length_of_source(self, tensor):
        """tf_keras: the bound is StridedSlice(Shape(list source))[0], taken
        before the ReverseV2 of go_backwards (which keeps the shape)."""
        node = self.view.node(tensor)
        if node is None or node.op != "StridedSlice" or not node.attr["shrink_axis_mask"].i & 1:
            return False
        shape = self.view.node(node.input[0])
        begin = self.view.const_value(node.input[1])
        sources = set()
        for src in self.srcs:
            sources.add(parse_input(src))
            node = self.view.node(src)
            if node is not None and node.op == "ReverseV2":
                sources.add(parse_input(node.input[0]))
        return (shape is not None and shape.op == "Shape" and parse_input(shape.input[0]) in sources
                and begin is not None and list(begin) == [0])

    def _cell(self, sources):
        consts = {}
        for i, (arg, out) in enumerate(zip(self.args, self.outs)):
            if out == arg and i not in self.input_lists:
                value = self._outer_const(i)
                if value is not None:
                    consts[i] = np.asarray(value)
        new_state = self.new_state
        written = self.new_state if self.out_carry is None else self.outs[self.out_carry]
        write = body_node(self.body, self.outs[self.out_list])
        if body_ref(self.body, write.input[2]) != written:
            raise SkipMatch("the loop writes something other than the new state to its output list")
        index = body_ref(self.body, write.input[1])
        if index in self.args and self.args.index(index) == self.time:
            self.last_only = False
        else:
            node = body_node(self.body, index)
            if scalar_of(node) != 0:
                raise SkipMatch("the output list is written neither at `time` nor at 0")
            self.last_only = True
        state_shape = shapes.shape_of(self.info, self.inputs[self.state])
        units = state_shape[-1] if state_shape else None
        return gru_cell.read_cell(self.body, new_state, self.state, _columns(self.input_lists, sources), self.time, consts, units)

    def _consumers(self, port):
        return self.view.consumers(self.node.name, port)

    def _stack(self):
        uses = self._consumers(self.out_list)
        if not uses or any(c.op != "TensorListStack" for c, _ in uses):
            raise SkipMatch("the output list is read by something other than TensorListStack")
        for port in range(len(self.inputs)):
            if port not in (self.out_list, self.state) and self._consumers(port):
                raise SkipMatch(f"loop output {port} is used after the loop")
        return [c for c, _ in uses]

    def _op_sources(self, sources, weights):
        """(x, AUGRU score (source, column) or None). A score column inside x
        is sliced out of it by the emitter; a separate score list must not
        feed the gates, and its rows leave the kernel."""
        if weights.attention is None:
            if len(sources) != 1:
                raise SkipMatch("the loop reads two step inputs and neither is an attention score")
            return sources[0][0], None
        column, first = weights.attention[1], 0
        for i, (src, width) in enumerate(sources):
            if first <= column < first + width:
                break
            first += width
        if len(sources) == 1:
            return src, (src, column)
        x, x_width = sources[1 - i]
        x_first = 0 if i == 1 else width
        if width != 1 or np.any(weights.kernel[first]):
            raise SkipMatch("the attention score list is wider than one column or feeds the gates")
        weights.kernel = weights.kernel[x_first:x_first + x_width]
        return x, (src, 0)

    def _mask_source(self, time_major):
        """Where the op's mask comes from: ("tensor", t) when the [B, T] bool
        mask Keras expanded and transposed is in the graph, else ("squeeze",
        s) for the [T, B, 1] tensor the mask list unstacks (gru_emit squeezes
        it, and transposes it unless time-major)."""
        unstack = self._producer(self.mask_list, ("TensorListFromTensor",))
        src = self.view.node(unstack.input[0])
        if not time_major and src is not None and src.op == "Transpose":
            perm = self.view.const_value(src.input[1])
            expand = self.view.node(src.input[0])
            if (perm is not None and list(perm) == [1, 0, 2] and expand is not None and expand.op == "ExpandDims"
                    and self.view.const_value(expand.input[1]) in (-1, 2)):
                return "tensor", expand.input[0]
        shape = shapes.shape_of(self.info, unstack.input[0])
        if shape is None or len(shape) != 3 or shape[2] != 1:
            raise SkipMatch("the mask list's source is not a [T, B, 1] tensor")
        return "squeeze", unstack.input[0]


def _columns(input_lists, sources):
    """Each input list's columns of the step input (their concatenation)."""
    widths = [w for _, w in sources]
    eye, first, columns = np.eye(sum(widths), dtype=np.float32), 0, {}
    for i, w in zip(input_lists, widths):
        columns[i] = eye[:, first:first + w]
        first += w
    return columns


def _static_max(view, node):
    """reduce_max of a constant over constant axes (a Range or a Const)."""
    values = [view.const_value(node.input[0])]
    axes = view.node(node.input[1])
    if axes is not None and axes.op == "Range":
        bounds = [view.const_value(i) for i in axes.input[:3]]
        values.append(np.arange(*[int(b) for b in bounds]) if all(b is not None for b in bounds) else None)
    else:
        values.append(view.const_value(node.input[1]))
    if any(v is None for v in values):
        return None
    return np.max(values[0], axis=tuple(np.atleast_1d(values[1]).tolist()))
