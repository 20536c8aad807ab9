"""Rewrites a matched GRU loop (fuse_gru.GruPlan) into one Recopt>GRU:
the op reads the sequence, the initial state, the weights, the mask and
the AUGRU scores; the stack, its transpose and the last state are pointed
at its outputs."""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes.graph_view import add_strided_slice, tensor_name

FUSED_OP = spec.GRU


class GruEmitter:
    def __init__(self, match):
        self.match, self.view = match, match.view

    def __getattr__(self, name):
        # The loop's facts (node, inputs, state, last_only, zero_output...)
        # are the match's; the emitter only adds the nodes.
        return getattr(self.match, name)

    def emit(self, plan, bf16):
        scores = None if plan.score is None else self._score_slice(*plan.score)
        mask = None if plan.mask is None else self._mask(plan.mask, plan.time_major)
        op = self._add_op(plan.x, plan.time_major, plan.weights, bf16, mask, scores)
        self._drop_control_edges()
        seq, last = op.name, tensor_name(op.name, 1)
        if self.last_only and mask is not None:
            last = self._masked_last(op, mask, plan.time_major)
        elif self.zero_output:
            seq = self._zeroed_where_masked(op, mask)
        self.view.replace_uses(tensor_name(self.node.name, self.state), tensor_name(op.name, 1))
        for stack in plan.stacks:
            self._replace_stack(stack, seq, plan.time_major, last)

    def _mask(self, source, time_major):
        """The op's mask, [B, T] (or time-major [T, B], x's layout)."""
        kind, tensor = source
        if kind == "tensor":
            return tensor
        base = self.node.name + "/recopt_gru/mask"
        steps_first = self.view.add_node("Squeeze", base, [tensor], {"T": types_pb2.DT_BOOL, "squeeze_dims": [2]})
        if time_major:
            return steps_first.name
        perm = self.view.add_const(base + "/perm", np.array([1, 0], np.int32)).name
        return self.view.add_node("Transpose", base + "/batch_major", [steps_first.name, perm], {
            "T": types_pb2.DT_BOOL, "Tperm": types_pb2.DT_INT32}).name

    def _drop_control_edges(self):
        """A stateful While gets control edges from the function's output
        NoOps; the body was just read as pure arithmetic, so they order nothing."""
        edge = "^" + self.node.name
        for consumer in self.view.control_consumers(self.node.name):
            kept = [i for i in consumer.input if i != edge]
            del consumer.input[:]
            consumer.input.extend(kept)
        self.view.touch()

    def _masked_last(self, op, mask, time_major):
        """The one-slot list's item after a masked loop. Keras: the last
        unmasked step's state, which is the final state, or zeros when no
        step was unmasked. With zero_output_for_mask: the final state where
        the loop's last step is unmasked, else zeros."""
        view, base = self.view, op.name + "/last_output"
        if self.zero_output:
            begin, masks = ([-1, 0], {"begin_mask": 2, "end_mask": 2, "shrink_axis_mask": 1}) if time_major else \
                ([0, -1], {"begin_mask": 1, "end_mask": 1, "shrink_axis_mask": 2})
            stepped = add_strided_slice(view, base + "/last_step", mask, types_pb2.DT_BOOL, begin, [0, 0], masks)
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

    def _score_slice(self, src, column):
        """src[:, :, column] as [B, T] (or [T, B])."""
        return add_strided_slice(
            self.view, self.node.name + "/recopt_gru/attention", src, types_pb2.DT_FLOAT, [0, 0, column], [0, 0, column + 1],
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
