"""The Python layers import one way: custom_ops.spec <- grappler_passes <-
tf_recopt, and no module reaches into another's private names. Read from
the source (ast), so a lazy import inside a function counts too."""
import ast
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# layer -> the top-level packages it may not import
FORBIDDEN = {
    "custom_ops/spec": ("grappler_passes", "tf_recopt"),
    "grappler_passes": ("tf_recopt",),
}


def _imports(path):
    """(line, module, names) of every import statement in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, tuple(a.name for a in node.names)


def _upward(layer):
    bad = []
    for path in sorted((REPO / layer).rglob("*.py")):
        for line, module, _ in _imports(path):
            if module.split(".")[0] in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_one_way(layer):
    assert _upward(layer) == []


def test_no_private_cross_module_imports():
    bad = []
    for top in ("custom_ops/spec", "grappler_passes", "tf_recopt"):
        for path in sorted((REPO / top).rglob("*.py")):
            for line, module, names in _imports(path):
                if module.split(".")[0] not in ("custom_ops", "grappler_passes", "tf_recopt"):
                    continue
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    bad.append(f"{path.relative_to(REPO)}:{line} imports {private} from {module}")
    assert bad == []


def test_checker_sees_a_violation(tmp_path, monkeypatch):
    """The check above could fail: a planted upward import is found."""
    planted = tmp_path / "grappler_passes"
    planted.mkdir()
    (planted / "bad.py").write_text("def f():\n    from tf_recopt.ops import reference\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _upward("grappler_passes") == ["grappler_passes/bad.py:2 imports tf_recopt.ops"]
