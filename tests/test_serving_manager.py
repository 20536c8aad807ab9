"""ModelManager with a fake loader: version policies, availability-preserving
swaps, failed loads, unloads that wait for requests in flight."""
import os
import threading
import time

import grpc
import pytest

from tf_recopt.serving import status
from tf_recopt.serving.manager import ModelConfig, ModelManager, State, VersionPolicy


class FakeServable:
    def __init__(self, name, version, path):
        self.name, self.version, self.path = name, version, path
        self.in_flight = 0
        self.cv = threading.Condition()

    def acquire(self):
        with self.cv:
            self.in_flight += 1

    def release(self):
        with self.cv:
            self.in_flight -= 1
            self.cv.notify_all()

    def wait_idle(self, timeout=None):
        with self.cv:
            return self.cv.wait_for(lambda: self.in_flight == 0, timeout)

    def close(self):
        assert self.in_flight == 0, "closed while a request was using it"
        self.closed = True


def fake_loader(fail=()):
    def load(name, version, path):
        if os.path.exists(os.path.join(path, "BROKEN")) or version in fail:
            raise OSError(f"cannot read {path}/saved_model.pb")
        return FakeServable(name, version, path)
    return load


def add_version(base, v, broken=False):
    path = os.path.join(base, str(v))
    os.makedirs(path)
    open(os.path.join(path, "saved_model.pb"), "w").close()
    if broken:
        open(os.path.join(path, "BROKEN"), "w").close()


def wait_for(predicate, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def states(manager, name):
    return {r.version: r.state for r in manager.status(name)}


@pytest.fixture
def manager():
    m = ModelManager(fake_loader(), num_load_threads=2)
    yield m
    m.stop()


@pytest.mark.parametrize("policy, expected", [
    (VersionPolicy(), {3}),
    (VersionPolicy("latest", num_versions=2), {2, 3}),
    (VersionPolicy("all"), {1, 2, 3}),
    (VersionPolicy("specific", versions=frozenset({1, 7})), {1}),
])
def test_version_policy(manager, tmp_path, policy, expected):
    for v in (1, 2, 3):
        add_version(tmp_path, v)
    manager.configure([ModelConfig("m", str(tmp_path), policy)])
    wait_for(lambda: {v for v, s in states(manager, "m").items() if s == State.AVAILABLE} == expected)
    with manager.servable("m") as s:
        assert s.version == max(expected)


def test_new_version_swaps_in_and_old_one_waits_for_its_requests(manager, tmp_path):
    add_version(tmp_path, 1)
    manager.configure([ModelConfig("m", str(tmp_path))])
    wait_for(lambda: states(manager, "m") == {1: State.AVAILABLE})
    with manager.servable("m") as old:    # a request in flight on version 1
        add_version(tmp_path, 2)
        manager.poll()
        wait_for(lambda: states(manager, "m") == {1: State.UNLOADING, 2: State.AVAILABLE})
        with manager.servable("m") as new:
            assert new.version == 2
        time.sleep(0.1)
        assert states(manager, "m")[1] == State.UNLOADING and old.version == 1
    wait_for(lambda: states(manager, "m") == {1: State.END, 2: State.AVAILABLE})


def test_failed_load_keeps_the_previous_version_and_is_reported(manager, tmp_path):
    add_version(tmp_path, 1)
    manager.configure([ModelConfig("m", str(tmp_path))])
    wait_for(lambda: states(manager, "m").get(1) == State.AVAILABLE)
    add_version(tmp_path, 2, broken=True)
    manager.poll()
    wait_for(lambda: states(manager, "m").get(2) == State.END)
    rec = {r.version: r for r in manager.status("m")}[2]
    assert rec.error.code == grpc.StatusCode.UNKNOWN and "version 2 of model m" in rec.error.message
    assert "saved_model.pb" in rec.error.message
    manager.poll()  # not retried while unchanged, and version 1 keeps serving
    with manager.servable("m") as s:
        assert s.version == 1
    # Fixed in place (new saved_model.pb): loaded on the next poll.
    os.remove(tmp_path / "2" / "BROKEN")
    os.utime(tmp_path / "2" / "saved_model.pb", (time.time() + 5, time.time() + 5))
    manager.poll()
    wait_for(lambda: states(manager, "m") == {1: State.END, 2: State.AVAILABLE})


def test_lookups_name_what_is_missing(manager, tmp_path):
    add_version(tmp_path, 4)
    manager.configure([ModelConfig("m", str(tmp_path), labels={"stable": 4, "canary": 5})])
    wait_for(lambda: states(manager, "m").get(4) == State.AVAILABLE)
    with manager.servable("m", label="stable") as s:
        assert s.version == 4
    cases = [(("nope",), grpc.StatusCode.NOT_FOUND, r"Latest\(nope\)"),
             (("m", 3), grpc.StatusCode.NOT_FOUND, r"Specific\(m, 3\)"),
             (("m", None, "canary"), grpc.StatusCode.NOT_FOUND, r"Specific\(m, 5\)"),
             (("m", None, "beta"), grpc.StatusCode.INVALID_ARGUMENT, "label: beta")]
    for args, code, message in cases:
        with pytest.raises(status.ServingError, match=message) as e:
            with manager.servable(*args):
                pass
        assert e.value.code == code
    with pytest.raises(status.ServingError, match="version 9 of model m"):
        manager.status("m", 9)


def test_removed_model_is_unloaded_and_new_one_loaded(manager, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    add_version(a, 1)
    add_version(b, 1)
    manager.configure([ModelConfig("a", str(a))])
    wait_for(lambda: states(manager, "a").get(1) == State.AVAILABLE)
    manager.configure([ModelConfig("b", str(b))])
    wait_for(lambda: states(manager, "b").get(1) == State.AVAILABLE)
    assert manager.model_names() == ["b"]
    with pytest.raises(status.ServingError):
        manager.status("a")
