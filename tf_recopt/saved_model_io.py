"""SavedModel <-> one GraphDef per signature, and back.

load(): every signature's concrete function is inlined into a flat GraphDef;
variables up to a size threshold become Consts (so passes can fold and
pre-pack them), bigger ones (embedding tables) and other resources (lookup
tables) stay as resource inputs bound to the live objects.

save(): each rewritten GraphDef is imported as a function and wrapped in a
tf.function with the original signature's input/output keys, dtypes and
shapes; a tf.Module tracking the kept variables and resources is saved, so
big tables go to the checkpoint and assets (vocabularies) come along.
"""
import dataclasses
import os
import shutil
from typing import Dict, List, Tuple

import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.eager import wrap_function
from tensorflow.python.framework import convert_to_constants
from tensorflow.python.tools import saved_model_utils
from tensorflow.python.util import nest

from tf_recopt import lean_load
from tf_recopt.errors import SavedModelError

SERVE_TAG = "serve"


@dataclasses.dataclass
class SignatureGraph:
    name: str
    graph_def: graph_pb2.GraphDef
    input_specs: Dict[str, tf.TensorSpec]        # key -> spec, in the function's flat order
    input_tensors: Dict[str, str]                # key -> placeholder tensor name
    output_tensors: Dict[str, str]               # key -> tensor name, in flat order
    captures: List[Tuple[str, object]]           # (placeholder tensor name, kept variable/resource)
    function: object                             # the original ConcreteFunction

    def resource_specs(self):
        """Captured variable placeholders -> (shape, dtype name), for passes
        that need a table's shape (the GraphDef has none for resources)."""
        specs = {}
        for placeholder, owner in self.captures:
            if isinstance(owner, tf.Variable):
                specs[placeholder.split(":")[0]] = (tuple(owner.shape.as_list()), owner.dtype.name)
        return specs

    def variables(self):
        """Captured variable placeholders (node name) -> the tf.Variable."""
        return {placeholder.split(":")[0]: owner for placeholder, owner in self.captures
                if isinstance(owner, tf.Variable)}

    def sync_captures(self, graph_def, variables):
        """Captures for graph_def as the passes left it: variables they added
        (placeholder node -> tf.Variable: the pass results' new_variables) join; variables no
        node reads any more leave, so the saved model does not carry a table
        that only its re-encoded copy serves."""
        read = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
        present = {n.name for n in graph_def.node}
        known = {c.split(":")[0] for c, _ in self.captures}
        self.captures = [(c, o) for c, o in self.captures if c.split(":")[0] in read] + \
            [(f"{name}:0", var) for name, var in variables.items() if name not in known and name in present]

    def protected_nodes(self):
        names = list(self.input_tensors.values()) + list(self.output_tensors.values())
        names += [c for c, _ in self.captures]
        return {n.split(":")[0] for n in names}


@dataclasses.dataclass
class LoadedModel:
    path: str
    tags: List[str]
    signatures: Dict[str, SignatureGraph]
    frozen_variables: int
    frozen_bytes: int
    kept_variables: List[str]
    # What must outlive the signatures' functions: the loaded objects (the
    # functions reference their variables weakly) and lean_load's pruned
    # copy (restored assets point into it).
    keep_alive: tuple = ()


def check_saved_model_dir(path):
    if not os.path.isdir(path):
        raise SavedModelError(f"{path}: not a directory")
    if not any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise SavedModelError(f"{path}: not a SavedModel (no saved_model.pb)")


def _serving_tags(path):
    tag_sets = [sorted(t) for t in saved_model_utils.get_saved_model_tag_sets(path)]
    for tags in tag_sets:
        if tags == [SERVE_TAG]:
            return tags
    if not tag_sets:
        raise SavedModelError(f"{path}: the SavedModel has no MetaGraph")
    return tag_sets[0]


def load(path, options):
    """Loads `path` and converts the requested signatures; never writes anything."""
    check_saved_model_dir(path)
    tags = _serving_tags(path)
    try:
        signature_map, trackables, lean = lean_load.load(path, tags)
    except Exception as exc:  # TF raises many types here; users need the path and the cause
        raise SavedModelError(f"{path}: cannot load SavedModel: {exc}") from exc
    available = list(signature_map.keys())
    missing = [s for s in (options.signatures or ()) if s not in available]
    if missing:
        raise SavedModelError(f"{path}: no signature(s) {missing}; the model has {available}")
    if not available:
        raise SavedModelError(f"{path}: the SavedModel has no signatures to optimize")
    # Every signature is converted and re-saved; options.signatures only picks
    # which ones the passes rewrite.
    functions = {name: signature_map[name] for name in available}
    inlined = {id(fn): _inlined(fn) for fn in functions.values()}
    frozen = _choose_frozen(functions.values(), inlined, options)
    owners = _resource_owners(trackables)
    graphs = {name: _to_graph(name, fn, inlined[id(fn)], frozen, owners) for name, fn in functions.items()}
    all_vars = {id(v): v for fn in functions.values() for v in fn.variables}
    return LoadedModel(
        path=path, tags=tags, signatures=graphs,
        frozen_variables=len(frozen), frozen_bytes=sum(_nbytes(all_vars[i]) for i in frozen),
        kept_variables=sorted(v.name for i, v in all_vars.items() if i not in frozen),
        keep_alive=(trackables, lean))


def _nbytes(var):
    return var.shape.num_elements() * var.dtype.size


# Ops that read rows of a table given as their first input.
_GATHERS = frozenset({"GatherV2", "Gather", "ResourceGather", "ResourceGatherNd", "GatherNd"})
_FORWARD = frozenset({"Identity", "ReadVariableOp"})


def _table_variables(fn, inlined):
    """(ids of fn's variables read by a gather: embedding tables, ids of
    those a tf-recopt op reads: an optimized model optimized again must keep
    them variables, since the op was built to read them as resources)."""
    var_by_handle = {id(v.handle): v for v in fn.variables}
    placeholders = {internal.name.split(":")[0]: var_by_handle[id(ext)]
                    for ext, internal in fn.graph.captures if id(ext) in var_by_handle}
    graph_def = graph_pb2.GraphDef.FromString(inlined)
    consumers = {}
    for node in graph_def.node:
        for i, inp in enumerate(node.input):
            consumers.setdefault(inp.split(":")[0].lstrip("^"), []).append((node, i))
    tables, pinned = set(), set()
    for name, var in placeholders.items():
        frontier = [name]
        while frontier:
            for node, index in consumers.get(frontier.pop(), ()):
                if node.op.startswith("Recopt>"):
                    pinned.add(id(var))
                elif node.op in _GATHERS and index == 0:
                    tables.add(id(var))
                elif node.op in _FORWARD:
                    frontier.append(node.name)
    return tables, pinned


class _Converter(convert_to_constants._FunctionConverterDataInEager):  # pylint: disable=protected-access
    """TF's converter over a graph it has already inlined: inlining (a
    Grappler run) is most of a conversion's time, and the inlined graph
    also tells which variables are tables."""

    def __init__(self, func, inlined, denylist):  # pylint: disable=super-init-not-called
        self._func = func
        convert_to_constants._ConverterData.__init__(  # pylint: disable=protected-access
            self, graph_pb2.GraphDef.FromString(inlined), variable_names_denylist=denylist)
        self._build_tensor_data()


def _inlined(fn):
    """fn's graph with its function calls inlined, serialized."""
    return convert_to_constants._run_inline_graph_optimization(  # pylint: disable=protected-access
        fn, lower_control_flow=False, aggressive_inlining=True).SerializeToString()


def _frozen_graph_def(fn, inlined, denylist):
    """fn as one GraphDef: captured variables not in denylist become Consts."""
    converter = _Converter(fn, inlined, denylist)
    graph_def, _ = convert_to_constants._replace_variables_by_constants(converter_data=converter)  # pylint: disable=protected-access
    return graph_def


def _choose_frozen(functions, inlined, options):
    """ids of variables to freeze, smallest first: each under
    freeze_max_bytes (embedding tables under freeze_table_max_bytes too),
    all together under freeze_total_bytes. A frozen table saves the fused
    lookup a variable read per table per call (VarHandleOp, the inliner's
    Identity, a resource lookup) on every call, which DeepCTR's MLR (208
    tables of 1000 x 1) pays 208 times: batch 1 in 236 -> 187 us
    (bench.warm_loop, docs/usage.md)."""
    variables = {id(v): v for fn in functions for v in fn.variables}
    tables, pinned = set(), set()
    for fn in functions:
        t, p = _table_variables(fn, inlined[id(fn)])
        tables |= t
        pinned |= p
    chosen, total = set(), 0
    for vid, var in sorted(variables.items(), key=lambda kv: _nbytes(kv[1])):
        size = _nbytes(var)
        if vid in pinned or var.dtype == tf.resource or size > options.freeze_max_bytes or \
                (vid in tables and size > options.freeze_table_max_bytes) or \
                total + size > options.freeze_total_bytes:
            continue
        chosen.add(vid)
        total += size
    return chosen


def _resource_owners(trackables):
    """id(resource handle) -> the trackable owning it (lookup tables and the like)."""
    owners = {}
    for obj in (o for t in trackables for o in tf.train.TrackableView(t).descendants()):
        try:
            handle = getattr(obj, "resource_handle", None)
        except Exception:  # some restored resources raise until initialised
            handle = None
        if handle is not None:
            owners[id(handle)] = obj
    return owners


def _to_graph(name, fn, inlined, frozen, owners):
    var_by_handle = {id(v.handle): v for v in fn.variables}
    denylist, captures = [], []
    for external, internal in fn.graph.captures:
        if external.dtype != tf.resource:
            continue  # captured constants are folded in by the converter
        var = var_by_handle.get(id(external))
        if var is not None and id(var) in frozen:
            continue
        placeholder = internal.name
        denylist.append(placeholder.split(":")[0])
        owner = var if var is not None else owners.get(id(external))
        if owner is None:
            raise SavedModelError(f"signature '{name}': captured resource '{placeholder}' has no "
                                  "trackable owner and cannot be re-saved")
        captures.append((placeholder, owner))
    graph_def = _frozen_graph_def(fn, inlined, denylist)
    flat_specs = tf.nest.flatten(fn.structured_input_signature)
    keys = _flat_keys(fn.structured_input_signature)
    input_tensors = {k: t.name for k, t in zip(keys, fn.inputs[:len(flat_specs)])}
    input_specs = dict(zip(keys, flat_specs))
    out_keys = _flat_keys(fn.structured_outputs)
    output_tensors = {k: t.name for k, t in zip(out_keys, fn.outputs)}
    return SignatureGraph(name, graph_def, input_specs, input_tensors, output_tensors, captures, fn)


def _flat_keys(structure):
    """Signature keys in the order tf.nest flattens the structure."""
    return [path.split("/")[-1] for path, _ in nest.flatten_with_joined_string_paths(structure)]


# ---------------------------------------------------------------- save ----
def _rename_functions(graph_def, suffix):
    """Gives every library function a fresh name so importing it never clashes
    with the original model's functions (same names, different bodies once
    variables are frozen) already registered in this process."""
    names = {f.signature.name: f"{f.signature.name}{suffix}" for f in graph_def.library.function}
    if not names:
        return

    def fix_attrs(attrs):
        for value in attrs.values():
            if value.HasField("func") and value.func.name in names:
                value.func.name = names[value.func.name]
            for f in value.list.func:
                if f.name in names:
                    f.name = names[f.name]

    for node in graph_def.node:
        fix_attrs(node.attr)
    for fdef in graph_def.library.function:
        fdef.signature.name = names[fdef.signature.name]
        for node in fdef.node_def:
            fix_attrs(node.attr)
    del graph_def.library.gradient[:]


def _imported(sig, graph_def, outputs, suffix):
    """A caller that runs graph_def on a feature dict (sig's inputs, plus
    the captured resources it adds) and returns the tensors `outputs`."""
    graph_def = graph_pb2.GraphDef.FromString(graph_def.SerializeToString())
    _rename_functions(graph_def, suffix)
    inputs = list(sig.input_tensors.values()) + [c for c, _ in sig.captures]
    imported = wrap_function.function_from_graph_def(graph_def, inputs, outputs)
    keys = list(sig.input_specs)
    owners = [owner for _, owner in sig.captures]

    def call(features):
        handles = [o.handle if isinstance(o, tf.Variable) else o.resource_handle for o in owners]
        return imported(*[features[k] for k in keys], *handles)
    return call


def build_signature_function(sig, graph_def, suffix):
    """A tf.function with sig's input/output keys computing graph_def."""
    call = _imported(sig, graph_def, list(sig.output_tensors.values()), suffix)
    out_keys = list(sig.output_tensors)
    specs = {k: tf.TensorSpec(s.shape, s.dtype, name=k) for k, s in sig.input_specs.items()}

    @tf.function(input_signature=[specs])
    def serve(features):
        return dict(zip(out_keys, call(features)))

    return serve.get_concrete_function()


def probe(sig, graph_def, tensors, feeds):
    """The values of `tensors` (any in graph_def, not only its outputs) when
    graph_def runs on `feeds`: what the report reads from inside the
    optimized graph (the exact retrieval op's survivor counts)."""
    return [t.numpy() for t in _imported(sig, graph_def, list(tensors), "_recopt_probe")(feeds)]


def save(model, graph_defs, out_dir):
    """Writes a SavedModel with model's signatures computed by graph_defs."""
    module = tf.Module()
    module.recopt_resources = []
    seen = set()
    signatures = {}
    for i, (name, sig) in enumerate(model.signatures.items()):
        for _, owner in sig.captures:
            if id(owner) not in seen:
                seen.add(id(owner))
                module.recopt_resources.append(owner)
        signatures[name] = build_signature_function(sig, graph_defs[name], f"_recopt{i}")
    tf.saved_model.save(module, out_dir, signatures=signatures)
    extra = os.path.join(model.path, "assets.extra")
    if os.path.isdir(extra):  # TF Serving warm-up requests live here
        shutil.copytree(extra, os.path.join(out_dir, "assets.extra"), dirs_exist_ok=True)
