"""The stored form of a model version: one blob that cannot run code when loaded.

A blob is a zip archive of two members:

* ``bundle.json``: the format version and everything in a ``ModelBundle`` but
  its pipeline, validated with pydantic (``BundleFile``);
* ``pipeline.skops``: the scikit-learn pipeline in the skops format, which
  rebuilds objects from their recorded state, never by calling what the file
  names, and only objects of trusted types: skops' defaults (scikit-learn
  estimators, numpy arrays, builtins) and ``TRUSTED``, fixed here.

The same zip is the file a model travels in between planners (``write_file``,
``read_file``): the lab copies out the model its planner trained, and a
planner adopts it through its config's ``initial_model``. ``bundle.json``
records what the model was trained on (``trained_on``: ``live`` or ``lab``;
bundles from before it was recorded read as ``live``).

Zip, because the standard library reads it and a skops file is one already.
Loading refuses, with ``RefusedModel``, anything else: not such a zip, another
format version, JSON that does not validate, a type outside the allow-list, or
a pipeline other than the one ``fit`` makes, checked down to the node indices
of every tree (scikit-learn follows them without bounds checks).
"""

from __future__ import annotations

import dataclasses
import json
import os
from io import BytesIO
from pathlib import Path
from typing import Annotated, Any, Final
from zipfile import ZIP_DEFLATED, ZipFile

import numpy as np
import skops.io as sio
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import TREE_LEAF, Tree
from skops.io.exceptions import UntrustedTypesFoundException

from medbay.common.events import ActionName
from medbay.planner.config import TrainedOn
from medbay.planner.model import ModelBundle

FORMAT_VERSION: Final = 1
BUNDLE_MEMBER: Final = "bundle.json"
PIPELINE_MEMBER: Final = "pipeline.skops"
MEMBERS: Final = (BUNDLE_MEMBER, PIPELINE_MEMBER)
MAX_UNPACKED_BYTES: Final = 1 << 30
"""What one archive may unpack to: a bound against zip bombs, far above any model."""

TRUSTED: Final = ("sklearn.tree._tree.Tree",)
"""Types trusted beyond skops' defaults. skops leaves ``Tree`` out because its
node indices are used unchecked; ``_sound_tree`` checks them before any use."""


class RefusedModel(ValueError):
    """A stored model version that is not loaded: unreadable, foreign or tampered with."""


class BundleFile(BaseModel):
    """``bundle.json``: a ``ModelBundle`` but its pipeline, with the format version."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    format: int
    version: str = Field(min_length=1)
    issue_features: tuple[str, ...]
    actions: tuple[ActionName, ...]
    candidates: dict[str, tuple[ActionName, ...]]
    min_target_tries: NonNegativeInt
    success_column: Annotated[int, Field(ge=0, le=1)]
    outcomes: NonNegativeInt
    holdout: NonNegativeInt
    validation_accuracy: Annotated[float, Field(ge=0, le=1)] | None
    trained_at: AwareDatetime
    trained_on: TrainedOn = "live"


def dumps(bundle: ModelBundle) -> bytes:
    fields = {f.name: getattr(bundle, f.name) for f in dataclasses.fields(bundle)}
    del fields["pipeline"]
    doc = BundleFile(format=FORMAT_VERSION, **fields)
    out = BytesIO()
    with ZipFile(out, "w", ZIP_DEFLATED) as archive:
        archive.writestr(BUNDLE_MEMBER, doc.model_dump_json(indent=2))
        archive.writestr(PIPELINE_MEMBER, sio.dumps(bundle.pipeline))
    return out.getvalue()


def loads(data: bytes) -> ModelBundle:
    """The bundle in ``data``, or ``RefusedModel`` saying why not."""
    try:
        return _loads(data)
    except RefusedModel:
        raise
    except Exception as exc:  # hostile input can fail anywhere in zipfile, skops or numpy
        raise RefusedModel(f"unreadable: {exc!r}") from exc


def _loads(data: bytes) -> ModelBundle:
    _check_size(data)
    with ZipFile(BytesIO(data)) as archive:
        found = sorted(archive.namelist())
        if found != sorted(MEMBERS):
            raise RefusedModel(f"the archive holds {found}, not {sorted(MEMBERS)}")
        doc = _bundle_file(archive.read(BUNDLE_MEMBER))
        skops_file = archive.read(PIPELINE_MEMBER)
    _check_size(skops_file)  # a skops file is a zip too
    try:
        pipeline = sio.loads(skops_file, trusted=list(TRUSTED))
    except UntrustedTypesFoundException as exc:
        raise RefusedModel(f"{PIPELINE_MEMBER}: {str(exc).splitlines()[0]}") from None
    _check_pipeline(pipeline, len(doc.issue_features) + len(doc.actions) + 2)
    return ModelBundle(pipeline=pipeline, **doc.model_dump(exclude={"format"}))


def write_file(bundle: ModelBundle, path: Path) -> None:
    """Write ``bundle`` to ``path`` (replaced whole: a reader never sees half a file)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(dumps(bundle))
    os.replace(partial, path)


def read_file(path: Path) -> ModelBundle:
    """The bundle in the file at ``path``, checked as ``loads`` checks a stored one;
    ``RefusedModel`` if it cannot be read or is refused, saying which file and why."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_UNPACKED_BYTES + 1)
    except OSError as exc:
        raise RefusedModel(f"model file {path}: {exc.strerror or exc}") from None
    try:
        if len(data) > MAX_UNPACKED_BYTES:
            raise RefusedModel(f"it is larger than {MAX_UNPACKED_BYTES} bytes")
        return loads(data)
    except RefusedModel as exc:
        raise RefusedModel(f"model file {path} refused: {exc}") from None


def _check_size(data: bytes) -> None:
    """Refuse the zip ``data`` if it would unpack to more than ``MAX_UNPACKED_BYTES``."""
    with ZipFile(BytesIO(data)) as archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_UNPACKED_BYTES:
            raise RefusedModel(f"it unpacks to more than {MAX_UNPACKED_BYTES} bytes")


def _bundle_file(raw: bytes) -> BundleFile:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise RefusedModel(f"{BUNDLE_MEMBER}: not JSON ({exc})") from None
    found = doc.get("format") if isinstance(doc, dict) else None
    if found != FORMAT_VERSION:
        raise RefusedModel(f"format version {found!r}, this planner reads {FORMAT_VERSION}")
    try:
        return BundleFile.model_validate(doc)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise RefusedModel(f"{BUNDLE_MEMBER}: {errors}") from None


def _check_pipeline(pipeline: Any, width: int) -> None:
    """Refuse anything but what ``make_pipeline`` fits: a StandardScaler, then a
    RandomForestClassifier of DecisionTreeClassifiers, over ``width`` features and
    classes 0 and 1."""
    steps = [name for name, _ in pipeline.steps] if type(pipeline) is Pipeline else None
    if steps != ["scale", "forest"]:
        raise RefusedModel("the pipeline is not a scale step then a forest step")
    scaler, forest = pipeline.named_steps["scale"], pipeline.named_steps["forest"]
    if type(scaler) is not StandardScaler or type(forest) is not RandomForestClassifier:
        raise RefusedModel("the pipeline's steps are not a StandardScaler and a RandomForest")
    for name in ("mean_", "scale_"):
        array = getattr(scaler, name)
        if not (
            isinstance(array, np.ndarray)
            and array.dtype == np.float64
            and array.shape == (width,)
            and np.isfinite(array).all()
        ):
            raise RefusedModel(f"the scaler's {name} is not {width} finite numbers")
    if not np.array_equal(forest.classes_, [0, 1]):
        raise RefusedModel("the forest's classes are not 0 and 1")
    trees = forest.estimators_
    if not isinstance(trees, list) or not trees:
        raise RefusedModel("the forest has no trees")
    for i, estimator in enumerate(trees):
        if type(estimator) is not DecisionTreeClassifier or type(estimator.tree_) is not Tree:
            raise RefusedModel(f"forest member {i} is not a decision tree")
        if not _sound_tree(estimator.tree_, width):
            raise RefusedModel(f"tree {i} is malformed (node indices, features or class weights)")


def _sound_tree(tree: Tree, width: int) -> bool:
    """Whether ``tree`` reads only features below ``width``, gives two finite class
    weights per node, and every split's children come after it, within the node array
    (so a descent stays in it and ends)."""
    n = tree.node_count
    left, right, feature, value = tree.children_left, tree.children_right, tree.feature, tree.value
    split = left != TREE_LEAF
    ids = np.arange(n)[split]
    return bool(
        n >= 1
        and tree.n_features == width
        and tree.n_outputs == 1
        and list(tree.n_classes) == [2]
        and value.shape == (n, 1, 2)
        and np.isfinite(value).all()
        and (value >= 0).all()
        and (value.sum(axis=2) > 0).all()
        and (left[split] > ids).all()
        and (left[split] < n).all()
        and (right[split] > ids).all()
        and (right[split] < n).all()
        and (feature[split] >= 0).all()
        and (feature[split] < width).all()
    )
