#!/usr/bin/env bash
# Copies the recopt op sources into a TensorFlow Serving checkout and links
# them into tensorflow_model_server. Usage: link_into_tf_serving.sh SERVING_DIR
set -euo pipefail
serving=${1:?usage: $0 /path/to/tensorflow/serving}
here=$(cd "$(dirname "$0")/.." && pwd)
build_file="$serving/tensorflow_serving/model_servers/BUILD"
[ -f "$build_file" ] || { echo "error: $build_file not found: is $serving a TF Serving checkout?" >&2; exit 2; }

dest="$serving/tensorflow_serving/custom_ops/recopt"
rm -rf "$dest"
mkdir -p "$dest"
cp "$here/BUILD" "$dest/BUILD"
cp -r "$here/custom_ops" "$dest/custom_ops"
find "$dest" -name '*.py' -delete
# Inside TF Serving only the C++ targets make sense.
python3 - "$dest/BUILD" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r"\npy_library\(.*?\n\)\n", "\n", text, flags=re.S)
open(path, "w").write(text)
PY

target='"//tensorflow_serving/custom_ops/recopt:recopt_ops"'
if grep -q 'custom_ops/recopt:recopt_ops' "$build_file"; then
  echo "already linked: $build_file"
else
  python3 - "$build_file" "$target" <<'PY'
import sys
path, target = sys.argv[1], sys.argv[2]
text = open(path).read()
anchor = "SUPPORTED_TENSORFLOW_OPS = "
if anchor not in text:
    sys.exit(f"error: no SUPPORTED_TENSORFLOW_OPS in {path}")
# Prepending a list works whatever follows (a plain list, or the
# if_v2([]) + if_not_v2([...]) + [...] form of recent releases).
text = text.replace(anchor, anchor + "[" + target + "] + ", 1)
open(path, "w").write(text)
PY
  echo "linked recopt_ops into $build_file"
fi
