"""Which versions of which models are loaded: polls each model's base path
for numbered version directories, loads the versions its policy asks for,
and unloads old ones only once a newer one serves (TF Serving's
availability-preserving policy), so a weight refresh drops no request."""
import contextlib
import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, FrozenSet, List, Optional

import grpc
from absl import logging
from tensorflow_serving.apis import get_model_status_pb2

from tf_recopt.serving import status

State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    kind: str = "latest"            # latest | all | specific
    num_versions: int = 1
    versions: FrozenSet[int] = frozenset()

    def select(self, on_disk):
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return set(on_disk) & set(self.versions)
        return set(sorted(on_disk)[-self.num_versions:])


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Dict[str, int] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass
class VersionRecord:
    version: int
    state: int
    error: Optional[status.ServingError] = None
    servable: object = None
    stamp: float = 0.0               # saved_model.pb mtime at the last load attempt


def _stamp(path):
    try:
        return os.stat(os.path.join(path, "saved_model.pb")).st_mtime
    except OSError:
        return 0.0


def versions_on_disk(base_path):
    try:
        names = os.listdir(base_path)
    except OSError:
        return {}
    return {int(n): os.path.join(base_path, n) for n in names
            if n.isdigit() and os.path.isdir(os.path.join(base_path, n))}


class ModelManager:
    def __init__(self, loader: Callable, num_load_threads=2, max_num_load_retries=0, load_retry_interval_s=60.0):
        self._loader = loader
        self._retries = max_num_load_retries
        self._retry_interval = load_retry_interval_s
        self._lock = threading.RLock()
        self._configs: Dict[str, ModelConfig] = {}
        self._records: Dict[str, Dict[int, VersionRecord]] = {}
        self._aspired: Dict[str, Dict[int, str]] = {}
        self._loads = ThreadPoolExecutor(max(1, num_load_threads), thread_name_prefix="recopt-load")
        self._unloads = ThreadPoolExecutor(1, thread_name_prefix="recopt-unload")
        self._stop = threading.Event()

    # -- configuration and polling ---------------------------------------
    def configure(self, configs: List[ModelConfig]):
        with self._lock:
            new = {c.name: c for c in configs}
            for name in set(self._configs) - set(new):
                logging.info("model %s removed from the config: unloading it", name)
                for rec in self._records.get(name, {}).values():
                    self._unload(name, rec)
                self._aspired.pop(name, None)
            self._configs = new
            for name in new:
                self._records.setdefault(name, {})
        self.poll()

    def poll(self):
        with self._lock:
            configs = list(self._configs.values())
        for cfg in configs:
            found = versions_on_disk(cfg.base_path)
            if not found:
                logging.warning("No versions of model %s found under base path %s", cfg.name, cfg.base_path)
            aspired = {v: found[v] for v in cfg.policy.select(found)}
            with self._lock:
                if self._configs.get(cfg.name) is cfg:
                    self._aspired[cfg.name] = aspired
                    self._reconcile(cfg.name)

    def start_polling(self, interval_s):
        if interval_s <= 0:
            return

        def loop():
            while not self._stop.wait(interval_s):
                try:
                    self.poll()
                except Exception:  # a poll must never kill the poller
                    logging.exception("file-system poll failed")
        threading.Thread(target=loop, name="recopt-fs-poll", daemon=True).start()

    def stop(self):
        self._stop.set()
        self._loads.shutdown(wait=False, cancel_futures=True)
        self._unloads.shutdown(wait=False, cancel_futures=True)

    # -- load / unload ----------------------------------------------------
    def _reconcile(self, name):
        records, aspired = self._records[name], self._aspired.get(name, {})
        for version, path in aspired.items():
            rec = records.get(version)
            if rec is None or (rec.state == State.END and (rec.error is None or rec.stamp != _stamp(path))):
                records[version] = VersionRecord(version, State.LOADING, stamp=_stamp(path))
                self._loads.submit(self._load, name, version, path)
        # Availability preserving: an old version goes only when an aspired
        # one serves (or when no version is wanted at all).
        serving_aspired = any(records[v].state == State.AVAILABLE for v in aspired if v in records)
        if serving_aspired or not aspired:
            for version, rec in records.items():
                if version not in aspired and rec.state == State.AVAILABLE:
                    self._unload(name, rec)

    def _load(self, name, version, path):
        error = None
        for attempt in range(self._retries + 1):
            if self._stop.is_set():
                return
            try:
                started = time.monotonic()
                servable = self._loader(name, version, path)
                logging.info("Successfully loaded servable version {name: %s version: %d} in %.2f s",
                             name, version, time.monotonic() - started)
                error = None
                break
            except Exception as exc:  # any load failure is reported in model status
                error = exc
                logging.error("Loading servable {name: %s version: %d} failed (attempt %d): %s",
                              name, version, attempt + 1, exc)
                if attempt < self._retries:
                    self._stop.wait(self._retry_interval)
        with self._lock:
            rec = self._records.get(name, {}).get(version)
            if rec is None or rec.state != State.LOADING:
                return
            if error is None:
                rec.state, rec.servable = State.AVAILABLE, servable
            else:
                rec.state = State.END
                rec.error = status.ServingError(
                    grpc.StatusCode.UNKNOWN,
                    f"Failed to load version {version} of model {name} from {path}: {type(error).__name__}: {error}")
            if name in self._configs:
                self._reconcile(name)

    def _unload(self, name, rec):
        servable, rec.servable, rec.state = rec.servable, None, State.UNLOADING

        def finish():
            if servable is not None:
                servable.wait_idle()
                servable.close()
            with self._lock:
                rec.state = State.END
            logging.info("Unloaded servable version {name: %s version: %d}", name, rec.version)
        self._unloads.submit(finish)

    # -- lookups ----------------------------------------------------------
    @contextlib.contextmanager
    def servable(self, name, version=None, label=None):
        """The servable for a request, held until the request is done."""
        servable = self._acquire(name, version, label)
        try:
            yield servable
        finally:
            servable.release()

    def _acquire(self, name, version, label):
        with self._lock:
            if name not in self._configs:
                raise status.not_found(f"Servable not found for request: Latest({name}): "
                                       f"no model named `{name}` is configured")
            version = self._labelled(name, label) if label else version
            records = self._records[name]
            if version:
                rec = records.get(int(version))
                if rec is None or rec.state != State.AVAILABLE:
                    raise status.not_found(f"Servable not found for request: Specific({name}, {version})")
            else:
                live = [r for r in records.values() if r.state == State.AVAILABLE]
                if not live:
                    raise status.not_found(f"Servable not found for request: Latest({name}): "
                                           "no version is loaded yet (see model status)")
                rec = max(live, key=lambda r: r.version)
            rec.servable.acquire()
            return rec.servable

    def _labelled(self, name, label):
        """The version a label names (caller holds the lock)."""
        labels = self._configs[name].labels
        if label not in labels:
            raise status.invalid_argument(f"Unrecognized servable version label: {label}")
        return labels[label]

    def status(self, name, version=None, label=None) -> List[VersionRecord]:
        with self._lock:
            if name not in self._configs:
                raise status.not_found(f"Could not find any versions of model {name}")
            version = self._labelled(name, label) if label else version
            records = self._records[name]
            if version:
                if int(version) not in records:
                    raise status.not_found(f"Could not find version {version} of model {name}")
                return [dataclasses.replace(records[int(version)])]
            if not records:
                raise status.not_found(f"Could not find any versions of model {name}")
            return [dataclasses.replace(r) for _, r in sorted(records.items())]

    def model_names(self):
        with self._lock:
            return sorted(self._configs)
