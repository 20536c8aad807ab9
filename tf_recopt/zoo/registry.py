"""Name -> exporter. Keras-2 models (tensorflow-recommenders) export in a
subprocess with TF_USE_LEGACY_KERAS=1: Keras 3 and tf_keras cannot share a process."""
import os
import subprocess
import sys

SIZES = ("small", "medium", "full")


def _keras3(module, path, size, seed):
    import importlib
    import keras
    keras.utils.set_random_seed(seed)
    model = importlib.import_module(f"tf_recopt.zoo.{module}").build(size)
    model.export(path, verbose=False)
    return path


def _legacy_keras_subprocess(module, path, size, seed):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    cmd = [sys.executable, "-m", f"tf_recopt.zoo.{module}", path, size, str(seed)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"exporting zoo model '{module}' failed:\n{result.stderr[-4000:]}")
    return path


MODELS = {
    "dlrm": lambda p, s, seed: _keras3("dlrm", p, s, seed),
    "wdl": lambda p, s, seed: _keras3("wdl", p, s, seed),
    "din": lambda p, s, seed: _keras3("din", p, s, seed),
    "dien": lambda p, s, seed: _keras3("dien", p, s, seed),
    "two_tower": lambda p, s, seed: _keras3("two_tower", p, s, seed),
    "dcn": lambda p, s, seed: _legacy_keras_subprocess("dcn", p, s, seed),
    "tfrs_retrieval": lambda p, s, seed: _legacy_keras_subprocess("tfrs_retrieval", p, s, seed),
    "tfrs_dlrm": lambda p, s, seed: _legacy_keras_subprocess("tfrs_dlrm", p, s, seed),
    "tfrs_dlrm_garden": lambda p, s, seed: _legacy_keras_subprocess("tfrs_dlrm_garden", p, s, seed),
    "tfrs_ranking": lambda p, s, seed: _legacy_keras_subprocess("tfrs_ranking", p, s, seed),
}


def export(name, path, size="small", seed=0):
    if name not in MODELS:
        raise ValueError(f"unknown zoo model '{name}'; known: {sorted(MODELS)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    return MODELS[name](path, size, seed)
