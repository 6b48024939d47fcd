"""Stored model versions on a real nats-server: a round trip, blobs refused unrun, model
files (what the lab copies out and a planner adopts), and old bundles."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pathlib
import pickle
import random
from collections.abc import AsyncIterator, Callable
from io import BytesIO
from typing import TYPE_CHECKING
from zipfile import ZipFile

import nats
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from medbay.common.events import ActionName
from medbay.planner.config import PlannerConfig
from medbay.planner.features import ISSUE_FEATURES, tries_feature
from medbay.planner.learning import TrainingRow
from medbay.planner.model import ModelBundle, fit, split
from medbay.planner.modelfile import (
    BUNDLE_MEMBER,
    PIPELINE_MEMBER,
    RefusedModel,
    dumps,
    loads,
    read_file,
    write_file,
)
from medbay.planner.store import CURRENT_MODEL, ModelStore, read_current_model

if TYPE_CHECKING:
    from conftest import NatsServer

CONFIG = PlannerConfig.model_validate({"min_outcomes": 20})
VERSION = "rf-test"
ACTIONS: tuple[ActionName, ...] = ("clear_cache", "restart_service")


def memory_features(value: float) -> dict[str, float]:
    return {"value": value, "kind:memory": 1.0} | {tries_feature(a): 10.0 for a in ACTIONS}


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    """Memory issues: clearing the cache works above 90%, restarting below."""
    rng = random.Random(0)
    rows = []
    for n in range(200):
        action = rng.choice(ACTIONS)
        value = rng.uniform(80, 100)
        success = (action == "clear_cache") == (value > 90)
        rows.append(
            TrainingRow(
                f"p{n}", "memory", action, "redis", "warning", memory_features(value), success
            )
        )
    train, held = split(rows, 0.2)
    return fit(train, CONFIG, holdout=held, version=VERSION)


@pytest.fixture
async def store(nats_server: NatsServer) -> AsyncIterator[ModelStore]:
    nc = await nats.connect(nats_server.url)
    try:
        yield await ModelStore.open(nc.jetstream())
    finally:
        await nc.close()


async def plant(store: ModelStore, version: str, blob: bytes) -> None:
    """Put ``blob`` in the bucket as ``version`` and make it the current model."""
    await store.objects.put(version, blob)
    await store.kv.put(CURRENT_MODEL, version.encode())


async def assert_refused(
    store: ModelStore, version: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``load_current`` logs one line naming the version and why, and gives no model;
    ``load`` raises ``RefusedModel``."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medbay.planner.store"):
        assert await store.load_current() is None
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"current model {version} refused: ") and "\n" not in line
    with pytest.raises(RefusedModel, match=why):
        await store.load(version)


def rezip(blob: bytes, members: dict[str, bytes]) -> bytes:
    """``blob``'s archive with ``members`` replaced or added."""
    out = BytesIO()
    with ZipFile(BytesIO(blob)) as old, ZipFile(out, "w") as new:
        for name in old.namelist():
            new.writestr(name, members.get(name, old.read(name)))
        for name in members.keys() - set(old.namelist()):
            new.writestr(name, members[name])
    return out.getvalue()


def with_json(bundle: ModelBundle, **changes: object) -> bytes:
    blob = dumps(bundle)
    with ZipFile(BytesIO(blob)) as archive:
        doc = json.loads(archive.read(BUNDLE_MEMBER)) | changes
    return rezip(blob, {BUNDLE_MEMBER: json.dumps(doc).encode()})


def with_tree_node(bundle: ModelBundle, field: str, value: int) -> bytes:
    """``bundle`` with one node of its first tree pointing out of bounds."""
    tampered = copy.deepcopy(bundle)
    getattr(tampered.pipeline.named_steps["forest"].estimators_[0].tree_, field)[0] = value
    return dumps(tampered)


def flipped(blob: bytes) -> bytes:
    data = bytearray(blob)
    data[len(data) // 3] ^= 0xFF
    return bytes(data)


async def test_a_stored_model_ranks_exactly_as_before(store, bundle):
    await store.save(bundle)
    loaded = await store.load_current()
    assert loaded is not None

    def fields(b: ModelBundle) -> dict[str, object]:
        return {f.name: getattr(b, f.name) for f in dataclasses.fields(b) if f.name != "pipeline"}

    assert fields(loaded) == fields(bundle)
    grid = [memory_features(v) for v in np.linspace(80, 100, 41)]
    for features in grid:
        assert loaded.rank("memory", features) == bundle.rank("memory", features)
    x = bundle.matrix(grid * 2, ["clear_cache"] * len(grid) + ["restart_service"] * len(grid))
    np.testing.assert_array_equal(loaded.probabilities(x), bundle.probabilities(x))
    np.testing.assert_array_equal(
        loaded.pipeline.predict_proba(x), bundle.pipeline.predict_proba(x)
    )
    assert bundle.rank("memory", memory_features(95))[0].action == "clear_cache"


async def test_a_planted_pickle_is_refused_unrun(store, pickle_bomb, tmp_path, caplog):
    marker = tmp_path / "pickle-ran"
    blob = pickle_bomb(marker)
    await plant(store, "rf-pickle", blob)
    await assert_refused(store, "rf-pickle", "not a zip file", caplog)
    assert not marker.exists()
    # the bomb is live: unpickling it, as the planner once did, creates the file
    pickle.loads(blob)
    assert marker.exists()


class Tripwire:
    """Creates ``path`` when its state is restored, as a loader that trusted it would."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __setstate__(self, state: dict[str, str]) -> None:
        pathlib.Path(state["path"]).touch()
        self.__dict__.update(state)


async def test_a_skops_file_with_an_untrusted_type_is_refused_unrun(
    store, bundle, tmp_path, caplog
):
    marker = tmp_path / "skops-ran"
    tripwire = sio.dumps(Tripwire(str(marker)))
    await plant(store, VERSION, rezip(dumps(bundle), {PIPELINE_MEMBER: tripwire}))
    await assert_refused(store, VERSION, r"Untrusted types found in the file: \[.*Tripwire", caplog)
    assert not marker.exists()
    # the file is live: a loader trusting the types it names would have run it
    sio.loads(tripwire, trusted=sio.get_untrusted_types(data=tripwire))
    assert marker.exists()


TAMPERED: dict[str, tuple[Callable[[ModelBundle], bytes], str]] = {
    "truncated": (lambda b: dumps(b)[: len(dumps(b)) // 2], "unreadable: BadZipFile"),
    "flipped": (lambda b: flipped(dumps(b)), "unreadable: "),
    "empty": (lambda b: b"", "unreadable: BadZipFile"),
    "bad json": (lambda b: rezip(dumps(b), {BUNDLE_MEMBER: b"{'version': "}), "not JSON"),
    "format version": (lambda b: with_json(b, format=2), "format version 2, this planner reads 1"),
    "unknown action": (lambda b: with_json(b, actions=["rm_rf"]), r"bundle.json: actions\.0"),
    "nan accuracy": (lambda b: with_json(b, validation_accuracy=float("nan")), "accuracy"),
    "extra member": (lambda b: rezip(dumps(b), {"run.py": b""}), "the archive holds"),
    "other estimator": (
        lambda b: rezip(
            dumps(b),
            {
                PIPELINE_MEMBER: sio.dumps(
                    Pipeline([("scale", StandardScaler()), ("forest", LogisticRegression())])
                )
            },
        ),
        "not a StandardScaler and a RandomForest",
    ),
    "child out of bounds": (
        lambda b: with_tree_node(b, "children_left", 10**9),
        "tree 0 is malformed",
    ),
    "child pointing back": (
        lambda b: with_tree_node(b, "children_right", 0),
        "tree 0 is malformed",
    ),
    "feature out of bounds": (lambda b: with_tree_node(b, "feature", 10**9), "tree 0 is malformed"),
    "another version": (
        lambda b: dumps(dataclasses.replace(b, version="rf-other")),
        "it holds model rf-other",
    ),
}


@pytest.mark.parametrize("case", TAMPERED)
async def test_a_tampered_or_corrupted_blob_is_refused(store, bundle, case, caplog):
    make, why = TAMPERED[case]
    await plant(store, VERSION, make(bundle))
    await assert_refused(store, VERSION, why, caplog)


# --- model files: what the lab copies out and a planner adopts ----------------------------

NEWER_KINDS = ("runaway_process", "low_utilisation", "host_silent", "error_rate", "latency")
OLD_FEATURES = tuple(
    f
    for f in ISSUE_FEATURES
    if f not in {f"kind:{k}" for k in (*NEWER_KINDS, "no_traffic")} and not f.startswith("trace:")
)


def test_a_model_file_round_trip_keeps_what_it_was_trained_on(bundle, tmp_path):
    lab = dataclasses.replace(bundle, trained_on="lab")
    path = tmp_path / "model.zip"
    write_file(lab, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]
    read = read_file(path)
    assert (read.version, read.trained_on) == (VERSION, "lab")
    assert read.rank("memory", memory_features(95)) == bundle.rank("memory", memory_features(95))
    with ZipFile(path) as archive:
        assert json.loads(archive.read(BUNDLE_MEMBER))["trained_on"] == "lab"
    assert read_file(path).description()["trained_on"] == "lab"


def test_a_model_file_that_is_not_a_model_is_refused_naming_it(tmp_path, pickle_bomb):
    marker = tmp_path / "pickle-ran"
    planted = tmp_path / "planted.zip"
    planted.write_bytes(pickle_bomb(marker))
    with pytest.raises(RefusedModel, match=f"model file {planted} refused: unreadable"):
        read_file(planted)
    assert not marker.exists()
    with pytest.raises(RefusedModel, match="No such file"):
        read_file(tmp_path / "missing.zip")


def test_an_old_bundle_loads_and_ranks(monkeypatch):
    """A bundle from before ``trained_on``, the newer issue kinds and the trace
    features: it reads as trained on live outcomes, and ranks issues that carry
    features it never saw."""
    monkeypatch.setattr("medbay.planner.model.ISSUE_FEATURES", OLD_FEATURES)
    rng = random.Random(1)
    rows = []
    for n in range(200):
        action = rng.choice(ACTIONS)
        value = rng.uniform(80, 100)
        features = {"value": value, "kind:memory": 1.0} | {tries_feature(a): 10.0 for a in ACTIONS}
        success = (action == "clear_cache") == (value > 90)
        rows.append(TrainingRow(f"p{n}", "memory", action, "redis", "warning", features, success))
    train, held = split(rows, 0.2)
    old = fit(train, CONFIG, holdout=held, version="rf-old")
    assert old.issue_features == OLD_FEATURES
    doc = json.loads(ZipFile(BytesIO(dumps(old))).read(BUNDLE_MEMBER))
    del doc["trained_on"]
    loaded = loads(rezip(dumps(old), {BUNDLE_MEMBER: json.dumps(doc).encode()}))
    assert loaded.trained_on == "live"
    today = memory_features(95) | {"kind:runaway_process": 0.0, "targeted:clear_cache": 1.0}
    assert loaded.rank("memory", today)[0].action == "clear_cache"
    traced = today | {"trace:present": 1.0, "trace:errors_per_second": 40.0}
    assert loaded.rank("memory", traced) == loaded.rank("memory", today)
    for kind in NEWER_KINDS:
        assert loaded.rank(kind, today | {f"kind:{kind}": 1.0}) == []


async def test_the_cli_identity_reads_the_current_model(secured_nats, bundle, tmp_path):
    """What the lab does to copy its planner's model out, with the CLI's permissions."""
    planner = await nats.connect(secured_nats.url, **secured_nats.client("planner"))
    cli = await nats.connect(secured_nats.url, **secured_nats.client("cli"))
    try:
        assert await read_current_model(cli.jetstream()) is None  # no planner ran yet
        await (await ModelStore.open(planner.jetstream())).save(bundle)
        copied = await read_current_model(cli.jetstream())
        assert copied is not None and copied.version == VERSION
        write_file(copied, tmp_path / "model.zip")
        assert read_file(tmp_path / "model.zip").version == VERSION
    finally:
        await planner.close()
        await cli.close()
    assert secured_nats.violations() == []
