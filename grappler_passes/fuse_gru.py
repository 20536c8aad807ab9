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
the op's outputs. What it orphans is left for prune_dead_nodes.
"""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes import gru_cell, shapes
from grappler_passes.graph_view import parse_input, scalar_of, tensor_name
from grappler_passes.pass_base import GraphPass, SkipMatch

FUSED_OP = spec.GRU
_WHILE_OPS = ("While", "StatelessWhile")
_COND_OPS = ("Less", "LogicalAnd", "Const", "Identity", "NoOp")
# Everything a GRU step may run. The rewrite drops the loop, so a body with
# any other op (a tf.print, an assert, a stateful read) is left alone even
# when that op does not feed the state.
_BODY_OPS = frozenset({
    "Const", "Identity", "NoOp", "MatMul", "BiasAdd", "AddV2", "Add", "Sub", "Mul", "Sigmoid", "Tanh", "Split",
    "SplitV", "Squeeze", "Unpack", "StridedSlice", "ConcatV2", "TensorListGetItem", "TensorListSetItem",
    "SelectV2", "Select", "Tile"})


class FuseGru(GraphPass):
    name = "fuse_gru"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only so far
    description = "Keras/tf_keras GRU While loop (reset_after both ways) -> Recopt>GRU"

    def run(self, ctx, result):
        view = ctx.view
        loops = [n for n in view.nodes() if n.op in _WHILE_OPS]
        if not loops:
            return
        info = view.tensor_info()
        library = {f.signature.name: f for f in view.graph_def.library.function}
        bf16 = ctx.precision("dense") == "bf16"
        for node in loops:
            try:
                _Loop(view, info, library, node).emit(bf16)
            except SkipMatch as why:
                result.skip(node.name, str(why))
                continue
            result.apply()


def _body_ref(fdef, ref):
    """Follows Identity nodes inside a function body back to a producer ref."""
    nodes = {n.name: n for n in fdef.node_def}
    while True:
        node = nodes.get(ref.partition(":")[0])
        if node is None or node.op != "Identity":
            return ref
        ref = next(i for i in node.input if not i.startswith("^"))


def _body_node(fdef, ref):
    return next((n for n in fdef.node_def if n.name == ref.partition(":")[0]), None)


class _Loop:
    def __init__(self, view, info, library, node):
        self.view, self.info, self.node = view, info, node
        self.body = library.get(node.attr["body"].func.name)
        self.cond = library.get(node.attr["cond"].func.name)
        if self.body is None or self.cond is None:
            raise SkipMatch("the loop's body or cond is not in the graph's function library")
        extra = sorted({n.op for n in self.body.node_def} - _BODY_OPS)
        if extra:
            raise SkipMatch(f"the loop body runs {', '.join(extra)}: not part of a GRU step")
        self.inputs = view.data_inputs(node)
        self.args = [a.name for a in self.body.signature.input_arg]
        self.outs = [_body_ref(self.body, self.body.ret[o.name]) for o in self.body.signature.output_arg]

    # ---- loop variables --------------------------------------------------
    def _roles(self):
        steps, lists, states = [], [], []
        for i, (arg, out) in enumerate(zip(self.args, self.outs)):
            if out == arg:
                continue
            node = _body_node(self.body, out)
            if node is not None and node.op in ("AddV2", "Add") and self._plus_one(node, arg):
                steps.append(i)
            elif node is not None and node.op == "TensorListSetItem" and node.input[0] == arg:
                lists.append(i)
            else:
                states.append(i)
        if len(states) not in (1, 2) or len(lists) != 1:
            raise SkipMatch(f"the loop carries {len(states)} states and {len(lists)} output lists, not one of each")
        self.out_list = lists[0]
        self._input_reads(steps)
        self.counters = [s for s in steps if s != self.time]
        self.zero_output = False
        if len(states) == 2:
            self._masked_states(states)
        elif self.mask_list is not None:
            raise SkipMatch("the loop reads a mask but carries one state")
        else:
            self.state, self.out_carry, self.new_state = states[0], None, self.outs[states[0]]

    def _masked_states(self, states):
        """Keras' masked loop carries the output and the state, each updated
        as where(mask_t, new, old) with the same new state; with tf_keras'
        zero_output_for_mask (which Bidirectional forces on when returning
        sequences) the output is where(mask_t, new, zeros) instead."""
        if self.mask_list is None:
            raise SkipMatch("the loop carries 2 states, not one of each")
        new, zeroed = set(), set()
        for i in states:
            sel = _body_node(self.body, self.outs[i])
            if sel is None or sel.op not in ("SelectV2", "Select"):
                raise SkipMatch("the loop carries two states that are not where(mask, new, old)")
            cond, then, other = (_body_ref(self.body, r) for r in sel.input[:3])
            tile = _body_node(self.body, cond)
            if tile is not None and tile.op == "Tile":
                cond = _body_ref(self.body, tile.input[0])
            if cond != self.mask_item or (other != self.args[i] and not self._invariant_zeros(other)):
                raise SkipMatch("a carried state is not where(mask_t, new, itself or zeros)")
            if other != self.args[i]:
                zeroed.add(i)
            new.add(then)
        write = _body_node(self.body, self.outs[self.out_list])
        written = _body_ref(self.body, write.input[2])
        outputs = [i for i in states if self.outs[i] == written]
        if len(new) != 1 or len(outputs) != 1:
            raise SkipMatch("the masked output and state do not share one new state")
        self.out_carry = outputs[0]
        self.state = next(i for i in states if i != self.out_carry)
        if self.state in zeroed:
            raise SkipMatch("a masked step zeroes the state instead of keeping it")
        self.zero_output = self.out_carry in zeroed
        self.new_state = new.pop()

    def _invariant_zeros(self, ref):
        """ref is a loop-invariant argument fed zeros (tf_keras' zeros_like of
        the step output, computed once before the loop)."""
        if ref not in self.args:
            return False
        i = self.args.index(ref)
        return self.outs[i] == ref and self._is_zeros(self.inputs[i])

    def _plus_one(self, node, arg):
        ins = [i for i in node.input if not i.startswith("^")]
        others = [i for i in ins if _body_ref(self.body, i) != arg]
        if len(others) != 1 or len(ins) != 2:
            return False
        const = _body_node(self.body, _body_ref(self.body, others[0]))
        return scalar_of(const) == 1

    def _input_reads(self, steps):
        """Sets time, input_lists (one, or two for an AUGRU's separate
        scores) and (Keras' masked loop) mask_list / mask_item."""
        self.mask_list = self.mask_item = None
        reads = [n for n in self.body.node_def if n.op == "TensorListGetItem"]
        kinds = [n.attr["element_dtype"].type for n in reads]
        if kinds.count(types_pb2.DT_FLOAT) not in (1, 2) or len(reads) - 2 > kinds.count(types_pb2.DT_BOOL):
            raise SkipMatch(f"the body reads {len(reads)} list items, not one step input (or input and scores) "
                        "and at most one mask")
        times, lists = set(), set()
        for node, kind in zip(reads, kinds):
            handle, index = (_body_ref(self.body, i) for i in node.input[:2])
            if handle not in self.args or index not in self.args or self.args.index(index) not in steps:
                raise SkipMatch("the body's list read is not item `time` of a loop-invariant list")
            if self.outs[self.args.index(handle)] != handle:
                raise SkipMatch("an input list changes inside the loop")
            times.add(self.args.index(index))
            if kind == types_pb2.DT_FLOAT:
                lists.add(self.args.index(handle))
            elif self.mask_list is None:
                self.mask_list, self.mask_item = self.args.index(handle), f"{node.name}:item:0"
            else:
                raise SkipMatch("the body reads two mask lists")
        if len(times) != 1:
            raise SkipMatch("the input and the mask are read at different steps")
        self.time = times.pop()
        self.input_lists = sorted(lists)

    # ---- outer graph -------------------------------------------------------
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
            return self._static_max(node)
        return self.view.const_value(self.inputs[i]) if port == 0 else None

    def _static_max(self, node):
        values = [self.view.const_value(node.input[0])]
        axes = self.view.node(node.input[1])
        if axes is not None and axes.op == "Range":
            values.append(np.arange(*[int(self.view.const_value(i)) for i in axes.input[:3]]) if all(
                self.view.const_value(i) is not None for i in axes.input[:3]) else None)
        else:
            values.append(self.view.const_value(node.input[1]))
        if any(v is None for v in values):
            return None
        return np.max(values[0], axis=tuple(np.atleast_1d(values[1]).tolist()))

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

    def _is_zeros(self, tensor):
        node = self.view.node(tensor)
        if node is not None and node.op == "ZerosLike":
            return True
        if node is not None and node.op == "Fill":
            value = self.view.const_value(node.input[1])
        else:
            value = self.view.const_value(tensor)
        return value is not None and not np.any(value)

    def _mask(self, time_major):
        """The op's mask, [B, T] (or time-major [T, B], x's layout), from the
        [T, B, 1] bool tensor the loop's mask list unstacks: Keras builds it
        as transpose(expand_dims(mask, -1)), reversed for go_backwards."""
        unstack = self._producer(self.mask_list, ("TensorListFromTensor",))
        src = self.view.node(unstack.input[0])
        if not time_major and src is not None and src.op == "Transpose":
            perm = self.view.const_value(src.input[1])
            expand = self.view.node(src.input[0])
            if (perm is not None and list(perm) == [1, 0, 2] and expand is not None and expand.op == "ExpandDims"
                    and self.view.const_value(expand.input[1]) in (-1, 2)):
                return expand.input[0]
        shape = shapes.shape_of(self.info, unstack.input[0])
        if shape is None or len(shape) != 3 or shape[2] != 1:
            raise SkipMatch("the mask list's source is not a [T, B, 1] tensor")
        base = self.node.name + "/recopt_gru/mask"
        bool_t = types_pb2.DT_BOOL
        steps_first = self.view.add_node("Squeeze", base, [unstack.input[0]], {
            "T": bool_t, "squeeze_dims": [2]})
        if time_major:
            return steps_first.name
        perm = self.view.add_const(base + "/perm", np.array([1, 0], np.int32)).name
        return self.view.add_node("Transpose", base + "/batch_major", [steps_first.name, perm], {
            "T": bool_t, "Tperm": types_pb2.DT_INT32}).name

    def _check_cond(self, steps):
        bounded = False
        self.cond_args = [a.name for a in self.cond.signature.input_arg]
        for n in self.cond.node_def:
            if n.op not in _COND_OPS:
                raise SkipMatch(f"the loop condition uses {n.op}, not only `time < T` and `counter < max`")
            if n.op != "Less":
                continue
            var, bound = (_body_ref(self.cond, i) for i in n.input[:2])
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
            node = _body_node(self.cond, ref)
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
        write = _body_node(self.body, self.outs[self.out_list])
        if _body_ref(self.body, write.input[2]) != written:
            raise SkipMatch("the loop writes something other than the new state to its output list")
        index = _body_ref(self.body, write.input[1])
        if index in self.args and self.args.index(index) == self.time:
            self.last_only = False
        else:
            node = _body_node(self.body, index)
            if scalar_of(node) != 0:
                raise SkipMatch("the output list is written neither at `time` nor at 0")
            self.last_only = True
        state_shape = shapes.shape_of(self.info, self.inputs[self.state])
        units = state_shape[-1] if state_shape else None
        return gru_cell.read_cell(self.body, new_state, self.state, self._columns(sources), self.time, consts, units)

    def _columns(self, sources):
        """Each input list's columns of the step input (their concatenation)."""
        widths = [w for _, w in sources]
        eye, first, columns = np.eye(sum(widths), dtype=np.float32), 0, {}
        for i, w in zip(self.input_lists, widths):
            columns[i] = eye[:, first:first + w]
            first += w
        return columns

    # ---- rewrite -----------------------------------------------------------
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

    def _drop_control_edges(self):
        """A stateful While gets control edges from the function's output
        NoOps; the body was just read as pure arithmetic, so they order nothing."""
        edge = "^" + self.node.name
        for consumer in self.view.control_consumers(self.node.name):
            kept = [i for i in consumer.input if i != edge]
            del consumer.input[:]
            consumer.input.extend(kept)
        self.view.touch()

    def emit(self, bf16):
        self._roles()
        sources, time_major, steps = self._source()
        self._check_start()
        self._check_cond(steps)
        weights = self._cell(sources)
        stacks = self._stack()
        if any(s.name in self.view.protected for s in stacks):
            raise SkipMatch("the stacked sequence is itself a signature output")
        x, scores = self._op_inputs(sources, weights)
        mask = None if self.mask_list is None else self._mask(time_major)
        op = self._add_op(x, time_major, weights, bf16, mask, scores)
        self._drop_control_edges()
        seq, last = op.name, tensor_name(op.name, 1)
        if self.last_only and mask is not None:
            last = self._masked_last(op, mask, time_major)
        elif self.zero_output:
            seq = self._zeroed_where_masked(op, mask)
        self.view.replace_uses(tensor_name(self.node.name, self.state), tensor_name(op.name, 1))
        for stack in stacks:
            self._replace_stack(stack, seq, time_major, last)

    def _masked_last(self, op, mask, time_major):
        """The one-slot list's item after a masked loop. Keras: the last
        unmasked step's state, which is the final state, or zeros when no
        step was unmasked. With zero_output_for_mask: the final state where
        the loop's last step is unmasked, else zeros."""
        view, base = self.view, op.name + "/last_output"
        if self.zero_output:
            begin, masks = ([-1, 0], {"begin_mask": 2, "end_mask": 2, "shrink_axis_mask": 1}) if time_major else \
                ([0, -1], {"begin_mask": 1, "end_mask": 1, "shrink_axis_mask": 2})
            stepped = view.add_strided_slice(base + "/last_step", mask, types_pb2.DT_BOOL, begin, [0, 0], masks)
        else:
            axis = view.add_const(base + "/time_axis", np.int32(0 if time_major else 1)).name
            stepped = view.add_node("Any", base + "/stepped", [mask, axis], {
                "Tidx": types_pb2.DT_INT32,
                "keep_dims": False})
        column = _expand_bool(view, base + "/per_example", stepped.name, 1)
        return _where_else_zeros(view, base, column.name, tensor_name(op.name, 1))

    def _zeroed_where_masked(self, op, mask):
        """The sequence with masked steps zeroed (zero_output_for_mask); the
        op repeats the last unmasked output there. The mask is in the
        sequence's layout."""
        base = op.name + "/zero_masked"
        keep = _expand_bool(self.view, base + "/keep", mask, -1)
        return _where_else_zeros(self.view, base, keep.name, op.name)

    def _op_inputs(self, sources, weights):
        """(x, AUGRU scores or None). A score column inside x is sliced out of
        it; a separate score list must not feed the gates, and its rows leave
        the kernel."""
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
            return src, self._score_slice(src, column)
        x, x_width = sources[1 - i]
        x_first = 0 if i == 1 else width
        if width != 1 or np.any(weights.kernel[first]):
            raise SkipMatch("the attention score list is wider than one column or feeds the gates")
        weights.kernel = weights.kernel[x_first:x_first + x_width]
        return x, self._score_slice(src, 0)

    def _score_slice(self, src, column):
        """src[:, :, column] as [B, T] (or [T, B])."""
        return self.view.add_strided_slice(
            self.node.name + "/recopt_gru/attention", src, types_pb2.DT_FLOAT, [0, 0, column], [0, 0, column + 1],
            {"begin_mask": 3, "end_mask": 3, "shrink_axis_mask": 4}, self.node.device).name

    def _add_op(self, x, time_major, w, bf16, mask, scores):
        view, base = self.view, self.node.name + "/recopt_gru"
        consts = [view.add_const(f"{base}/{k}", getattr(w, k)).name
                  for k in ("kernel", "recurrent_kernel", "input_bias", "recurrent_bias")]
        masks = [] if mask is None else [mask]
        attention = [] if scores is None else [scores]
        return view.add_node(FUSED_OP, base, [x, self.inputs[self.state]] + consts + masks + attention, {
            "reset_after": w.reset_after,
            "time_major": time_major,
            "weights_bf16": bf16,
            "num_masks": len(masks),
            "num_attention": len(attention),
            "attention_mode": (w.attention or ("update",))[0].encode(),
        }, device=self.node.device)

    def _replace_stack(self, stack, seq, time_major, last):
        view = self.view
        if self.last_only:
            axis = view.add_const(stack.name + "/recopt_axis", np.int32(0)).name
            expand = view.add_node("ExpandDims", stack.name + "/recopt_last", [last, axis], {
                "T": types_pb2.DT_FLOAT,
                "Tdim": types_pb2.DT_INT32})
            view.replace_uses(stack.name, expand.name)
            return
        if time_major:
            view.replace_uses(stack.name, seq)
            return
        bypassed = set()
        for consumer, _ in view.consumers(stack.name):
            perm = view.const_value(consumer.input[1]) if consumer.op == "Transpose" else None
            if perm is not None and list(perm) == [1, 0, 2] and consumer.name not in view.protected:
                view.replace_uses(consumer.name, seq)
                bypassed.add(consumer.name)
        if any(c.name not in bypassed for c, _ in view.consumers(stack.name)):
            perm = view.add_const(stack.name + "/recopt_perm", np.array([1, 0, 2], np.int32)).name
            back = view.add_node("Transpose", stack.name + "/recopt_time_major", [seq, perm], {
                "T": types_pb2.DT_FLOAT,
                "Tperm": types_pb2.DT_INT32})
            view.replace_uses(stack.name, back.name)


def _where_else_zeros(view, name, keep, tensor):
    """where(keep, tensor, 0) on float32 (keep broadcasts), named `name`."""
    float_t = {"T": types_pb2.DT_FLOAT}
    zeros = view.add_node("ZerosLike", name + "/zeros", [tensor], float_t)
    return view.add_node("SelectV2", name, [keep, tensor, zeros.name], float_t).name


def _expand_bool(view, name, tensor, axis):
    """expand_dims of a bool tensor, so a [B] or [B, T] mask broadcasts
    against [B, u] or [B, T, u] in a SelectV2."""
    axis = view.add_const(name + "/axis", np.int32(axis)).name
    return view.add_node("ExpandDims", name, [tensor, axis], {
        "T": types_pb2.DT_BOOL,
        "Tdim": types_pb2.DT_INT32})
