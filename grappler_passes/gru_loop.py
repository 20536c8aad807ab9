"""The loop variables of a While loop that may be a recurrence: which carry
the step counter (time), other counters, the output list, the state (and,
in Keras' masked loop, the carried output), which lists are read per step
(inputs, an AUGRU's scores, a mask). Read only; fuse_gru checks the outer
graph and gru_cell the step itself."""
import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes.graph_view import scalar_of
from grappler_passes.pass_base import SkipMatch

WHILE_OPS = ("While", "StatelessWhile")
COND_OPS = ("Less", "LogicalAnd", "Const", "Identity", "NoOp")
# Everything a GRU step may run. The rewrite drops the loop, so a body with
# any other op (a tf.print, an assert, a stateful read) is left alone even
# when that op does not feed the state.
BODY_OPS = frozenset({
    "Const", "Identity", "NoOp", "MatMul", "BiasAdd", "AddV2", "Add", "Sub", "Mul", "Sigmoid", "Tanh", "Split",
    "SplitV", "Squeeze", "Unpack", "StridedSlice", "ConcatV2", "TensorListGetItem", "TensorListSetItem",
    "SelectV2", "Select", "Tile"})


def body_ref(fdef, ref):
    """Follows Identity nodes inside a function body back to a producer ref."""
    nodes = {n.name: n for n in fdef.node_def}
    while True:
        node = nodes.get(ref.partition(":")[0])
        if node is None or node.op != "Identity":
            return ref
        ref = next(i for i in node.input if not i.startswith("^"))


def body_node(fdef, ref):
    return next((n for n in fdef.node_def if n.name == ref.partition(":")[0]), None)


class LoopVariables:
    def __init__(self, view, info, library, node):
        self.view, self.info, self.node = view, info, node
        self.body = library.get(node.attr["body"].func.name)
        self.cond = library.get(node.attr["cond"].func.name)
        if self.body is None or self.cond is None:
            raise SkipMatch("the loop's body or cond is not in the graph's function library")
        extra = sorted({n.op for n in self.body.node_def} - BODY_OPS)
        if extra:
            raise SkipMatch(f"the loop body runs {', '.join(extra)}: not part of a GRU step")
        self.inputs = view.data_inputs(node)
        self.args = [a.name for a in self.body.signature.input_arg]
        self.outs = [body_ref(self.body, self.body.ret[o.name]) for o in self.body.signature.output_arg]

    def _roles(self):
        steps, lists, states = [], [], []
        for i, (arg, out) in enumerate(zip(self.args, self.outs)):
            if out == arg:
                continue
            node = body_node(self.body, out)
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
            sel = body_node(self.body, self.outs[i])
            if sel is None or sel.op not in ("SelectV2", "Select"):
                raise SkipMatch("the loop carries two states that are not where(mask, new, old)")
            cond, then, other = (body_ref(self.body, r) for r in sel.input[:3])
            tile = body_node(self.body, cond)
            if tile is not None and tile.op == "Tile":
                cond = body_ref(self.body, tile.input[0])
            if cond != self.mask_item or (other != self.args[i] and not self._invariant_zeros(other)):
                raise SkipMatch("a carried state is not where(mask_t, new, itself or zeros)")
            if other != self.args[i]:
                zeroed.add(i)
            new.add(then)
        write = body_node(self.body, self.outs[self.out_list])
        written = body_ref(self.body, write.input[2])
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
        others = [i for i in ins if body_ref(self.body, i) != arg]
        if len(others) != 1 or len(ins) != 2:
            return False
        const = body_node(self.body, body_ref(self.body, others[0]))
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
            handle, index = (body_ref(self.body, i) for i in node.input[:2])
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

    def _is_zeros(self, tensor):
        node = self.view.node(tensor)
        if node is not None and node.op == "ZerosLike":
            return True
        if node is not None and node.op == "Fill":
            value = self.view.const_value(node.input[1])
        else:
            value = self.view.const_value(tensor)
        return value is not None and not np.any(value)
