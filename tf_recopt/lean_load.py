"""tf.saved_model.load without the functions no signature runs.

tf.saved_model.load turns every FunctionDef in the SavedModel's library into
a Python FuncGraph, op by op. Keras saves each layer's call traces beside
the serving function, so a wide DeepCTR model carries hundreds to thousands
of functions of which its signatures call two (FiBiNET: 302, ONN: 7648).
Converting them was most of optimize()'s time on those models (FiBiNET:
12.7 s of a plain load; 2.8 s without them).

Only the signature map and the objects its functions capture (variables,
lookup tables and what they need) are loaded, with TensorFlow's
load_partial; ONN's object graph holds 27k objects besides. The library in
a lean copy of the SavedModel keeps the functions those objects reach,
transitively, plus gradient functions; object-graph nodes lose the concrete
functions that are gone (a function node keeps its name with fewer or no
traces; a bare concrete function becomes a plain object). Node ids are
unchanged, so the checkpoint restores into the same objects. The copy is a
temp dir holding the pruned saved_model.pb and symlinks to the rest
(variables, assets), kept until the loaded model is collected: restored
assets point into it, and re-saving copies them from there.
"""
import os
import shutil
import tempfile
import weakref

import tensorflow as tf
from absl import logging
from tensorflow.python.saved_model import loader_impl

_PROTO_FILES = ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb")


def load(path, tags):
    """(signatures, trackables, holder): the signature map, the loaded
    objects to search for resource owners, and an object to tie the lean
    copy's lifetime to (None after a plain load). Any failure of the lean
    copy falls back to tf.saved_model.load on the original."""
    scratch = None
    try:
        lean = _lean_copy(path)
        if lean is not None:
            scratch, filters = lean
            loaded = tf.__internal__.saved_model.load_partial(scratch, filters, tags=tags)
            return loaded["root.signatures"], list(loaded.values()), _Scratch(scratch)
    except Exception as exc:  # a lean copy is an optimization, never a new failure
        logging.warning("%s: loading only what the signatures use failed (%s); loading all of it", path, exc)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    root = tf.saved_model.load(path, tags=tags)
    return root.signatures, [root], None


class _Scratch:
    """Removes the lean copy when the last holder goes (or at exit)."""

    def __init__(self, path):
        self.path = path
        self._finalizer = weakref.finalize(self, shutil.rmtree, path, True)


def _lean_copy(path):
    """(temp dir with the pruned SavedModel, load_partial filters), or None
    when it cannot be pruned (TF1 SavedModels, several MetaGraphs, chunked
    protos, no signatures, object names load_partial cannot address)."""
    if os.path.exists(os.path.join(path, "saved_model.cpb")):
        return None
    saved_model = loader_impl.parse_saved_model(path)
    if len(saved_model.meta_graphs) != 1 or not saved_model.meta_graphs[0].HasField("object_graph_def"):
        return None
    filters = prune(saved_model.meta_graphs[0])
    if filters is None:
        return None
    scratch = tempfile.mkdtemp(prefix="recopt_lean_")
    try:
        with open(os.path.join(scratch, "saved_model.pb"), "wb") as f:
            f.write(saved_model.SerializeToString())
        src = os.path.abspath(path)
        for entry in os.listdir(src):
            if entry not in _PROTO_FILES:
                os.symlink(os.path.join(src, entry), os.path.join(scratch, entry))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch, filters


def prune(meta_graph):
    """Drops, in place, the library functions the objects to load do not
    reach; returns load_partial's filters for those objects (the signature
    map, and whatever its functions capture), or None."""
    graph = meta_graph.object_graph_def
    library = meta_graph.graph_def.library
    paths = _paths(graph)
    signatures = next((c.node_id for c in graph.nodes[0].children if c.local_name == "signatures"), None)
    if signatures is None:
        return None
    loaded, filters, stack = set(), [], [signatures]
    while stack:
        node_id = stack.pop()
        if node_id in loaded:
            continue
        if node_id not in paths or any("." in name for name in paths[node_id]):
            return None  # load_partial splits paths on "."
        filters.append(".".join(("root",) + paths[node_id]))
        for member in _subtree(graph, node_id) - loaded:
            loaded.add(member)
            stack.extend(_dependencies(graph, member))
    by_name = {f.signature.name: f for f in library.function}
    roots = set().union(*(_functions_of(graph.nodes[i]) for i in loaded))
    roots |= {g.gradient_func for g in library.gradient}
    roots |= {g.gradient_func for g in library.registered_gradients}
    keep = _closure(roots & by_name.keys(), lambda name: _calls(by_name[name], by_name))
    for node in graph.nodes:
        kind = node.WhichOneof("kind")
        if kind == "function":
            kept = [n for n in node.function.concrete_functions if n in keep]
            del node.function.concrete_functions[:]
            node.function.concrete_functions.extend(kept)
        elif kind == "bare_concrete_function" and node.bare_concrete_function.concrete_function_name not in keep:
            node.user_object.identifier = "_generic_user_object"
    for name in [n for n in graph.concrete_functions if n not in keep]:
        del graph.concrete_functions[name]
    functions = [f for f in library.function if f.signature.name in keep]
    del library.function[:]
    library.function.extend(functions)
    return sorted(set(filters))


def _paths(graph):
    """node id -> the child names on its shortest path from the root."""
    paths, queue = {0: ()}, [0]
    for node_id in queue:
        for child in graph.nodes[node_id].children:
            if child.node_id not in paths:
                paths[child.node_id] = paths[node_id] + (child.local_name,)
                queue.append(child.node_id)
    return paths


def _subtree(graph, node_id):
    """node_id and its descendants: what load_partial loads for its path."""
    seen, stack = set(), [node_id]
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(c.node_id for c in graph.nodes[i].children)
    return seen


def _dependencies(graph, node_id):
    """Nodes that must load before node_id: the loader's own rule (declared
    dependencies, the captures of its concrete functions) plus its
    checkpoint save/restore functions."""
    node = graph.nodes[node_id]
    deps = [d.node_id for d in node.dependencies]
    for name in _functions_of(node):
        if name in graph.concrete_functions:
            deps.extend(graph.concrete_functions[name].bound_inputs)
    for saveable in node.saveable_objects.values():
        deps += [saveable.save_function, saveable.restore_function]
    return deps


def _functions_of(node):
    kind = node.WhichOneof("kind")
    if kind == "function":
        return set(node.function.concrete_functions)
    if kind == "bare_concrete_function":
        return {node.bare_concrete_function.concrete_function_name}
    if kind == "captured_tensor":
        return {node.captured_tensor.concrete_function}
    return set()


def _calls(fdef, names):
    """Library functions fdef's body refers to: called by op name or named in
    an attr (PartitionedCall's f, While's cond/body, ...)."""
    out = set()
    for node in fdef.node_def:
        if node.op in names:
            out.add(node.op)
        for value in node.attr.values():
            if value.HasField("func"):
                out.add(value.func.name)
            out.update(f.name for f in value.list.func)
    return {name for name in out if name in names}


def _closure(roots, calls):
    """roots and every function they call, transitively; calls(name) is read
    only for functions reached (ONN's library holds 7648, its signature
    reaches 2)."""
    keep, stack = set(), list(roots)
    while stack:
        name = stack.pop()
        if name not in keep:
            keep.add(name)
            stack.extend(calls(name))
    return keep
