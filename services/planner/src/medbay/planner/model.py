"""The learnt model: P(success | issue features, candidate action, that action's rate).

A scikit-learn Pipeline (StandardScaler, then a RandomForestClassifier of 100
trees) learns from outcomes, successes and failures alike. To plan, it scores
every candidate action for the issue's kind in one ``predict_proba`` call and
ranks them; a plan's confidence is the top probability.

The candidates for a kind are the actions with at least ``min_action_outcomes``
outcomes for that kind in the training set, and of those, for one issue, the
ones with a permitted target here (``targeted:<action>``) that were tried at
least ``min_target_outcomes`` times on it (``tries:<action>``; both are in the
plan's features, so the ranking stays reproducible): the model never proposes
an action it has seen nothing of here, or one nothing may do. An issue with no
candidates is planned by the rule table.

Training rows carry the rates and tries of their plan's features, but
recomputed out of fold (see ``out_of_fold_rates``).

Validation: plans are held out by a hash of their ``plan_id``, so a plan is held
out in every training or in none. A model is thus never scored on outcomes it
learnt from, and a new model and the current one are compared on the same
held-out outcomes. Validation accuracy is the share of held-out outcomes
predicted right (P(success) >= 0.5 against what happened). A new model replaces
the current one only if it is at least as accurate there, and so does a model
trained elsewhere (``judge_adoption``, for the config's ``initial_model``).

Every action is a possible candidate, and every issue kind a one-hot feature; a
model records the features it was trained with, so a model from before a kind
or a feature existed still loads and ranks (the new kind's feature, or the
trace figures, are not among its inputs, and it has no candidates for that kind).
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from medbay.common.actions import ACTIONS, RISK_ORDER
from medbay.common.events import ActionName, Plan
from medbay.planner.config import ForestSettings, PlannerConfig, TrainedOn
from medbay.planner.features import (
    ACTION_NAMES,
    ISSUE_FEATURES,
    rate_feature,
    targeted_feature,
    tries_feature,
)
from medbay.planner.learning import TrainingRow
from medbay.planner.rates import NEUTRAL, SuccessRates

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


class RankedAction(NamedTuple):
    action: ActionName
    probability: float


class NotEnoughData(ValueError):
    """The training set cannot make a model (too small, or only one outcome class)."""


@dataclasses.dataclass
class ModelBundle:
    """A trained pipeline and everything needed to use it exactly as it was trained."""

    version: str
    pipeline: Pipeline
    issue_features: tuple[str, ...]
    actions: tuple[ActionName, ...]
    candidates: dict[str, tuple[ActionName, ...]]
    min_target_tries: int
    """A candidate is ranked only if it has this many outcomes on the issue's target."""
    success_column: int
    outcomes: int
    """Outcomes it was given: trained on ``outcomes - holdout``, validated on ``holdout``."""
    holdout: int
    validation_accuracy: float | None
    trained_at: datetime
    trained_on: TrainedOn = "live"
    """Live incidents, or faults injected in the lab."""

    def matrix(
        self, features: Sequence[dict[str, float]], actions: Sequence[ActionName]
    ) -> FloatArray:
        """One model input row per (features, action) pair."""
        width = len(self.issue_features)
        x = np.zeros((len(actions), width + len(self.actions) + 2))
        for i, (feats, action) in enumerate(zip(features, actions, strict=True)):
            x[i, :width] = [feats.get(name, 0.0) for name in self.issue_features]
            if action in self.actions:
                x[i, width + self.actions.index(action)] = 1.0
            x[i, -2] = feats.get(rate_feature(action), NEUTRAL)
            x[i, -1] = feats.get(tries_feature(action), 0.0)
        return x

    def probabilities(self, x: FloatArray) -> FloatArray:
        """P(success) per row: what ``pipeline.predict_proba`` gives, computed directly.

        Scaling, then the mean of the trees' leaf distributions; skipping
        scikit-learn's per-tree dispatch makes a plan about ten times faster."""
        scaler: StandardScaler = self.pipeline.named_steps["scale"]
        forest: RandomForestClassifier = self.pipeline.named_steps["forest"]
        z = np.ascontiguousarray((x - scaler.mean_) / scaler.scale_, dtype=np.float32)
        total = np.zeros(len(x))
        for tree in forest.estimators_:
            leaf = tree.tree_.predict(z)
            total += leaf[:, self.success_column] / leaf.sum(axis=1)
        proba: FloatArray = total / len(forest.estimators_)
        return proba

    def rank(self, kind: str, features: dict[str, float]) -> list[RankedAction]:
        """The candidate actions, most likely to succeed first (empty: no candidates).

        Candidates are the kind's actions the model learnt about that have a
        target here (plans from before targets were checked have no
        ``targeted:`` features: theirs all had one) and were tried on it, scored
        in one batch; ties go to the lower risk."""
        actions = [
            a
            for a in self.candidates.get(kind, ())
            if features.get(targeted_feature(a), 1.0) != 0.0
            and features.get(tries_feature(a), 0.0) >= self.min_target_tries
        ]
        if not actions:
            return []
        proba = self.probabilities(self.matrix([features] * len(actions), actions))
        ranked = sorted(
            zip(actions, proba.tolist(), strict=True),
            key=lambda ap: (-ap[1], RISK_ORDER[ACTIONS[ap[0]].risk], ACTION_NAMES.index(ap[0])),
        )
        return [RankedAction(a, p) for a, p in ranked]

    def accuracy(self, rows: Sequence[TrainingRow]) -> float | None:
        """Share of ``rows`` whose outcome it predicts right (None for no rows)."""
        if not rows:
            return None
        x = self.matrix([r.features for r in rows], [r.action for r in rows])
        predicted = self.probabilities(x) >= 0.5
        actual = np.array([r.success for r in rows])
        return float(np.mean(predicted == actual))

    def description(self) -> dict[str, Any]:
        """What the object store keeps next to the model, as JSON."""
        return {
            "version": self.version,
            "validation_accuracy": self.validation_accuracy,
            "holdout_outcomes": self.holdout,
            "training_outcomes": self.outcomes - self.holdout,
            "trained_at": self.trained_at.isoformat(),
            "trained_on": self.trained_on,
            "candidates": {k: list(v) for k, v in sorted(self.candidates.items())},
        }


def unit_hash(salt: str, plan_id: str) -> float:
    """A stable number in [0, 1) for ``plan_id``, a different one per ``salt``."""
    digest = hashlib.sha1(f"{salt}|{plan_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_held_out(plan_id: str, fraction: float) -> bool:
    return unit_hash("holdout", plan_id) < fraction


def split(
    rows: Sequence[TrainingRow], fraction: float
) -> tuple[list[TrainingRow], list[TrainingRow]]:
    """(training rows, held-out rows): whole plans go one way or the other."""
    train: list[TrainingRow] = []
    held: list[TrainingRow] = []
    for row in rows:
        (held if is_held_out(row.plan_id, fraction) else train).append(row)
    return train, held


def out_of_fold_rates(
    rows: Sequence[TrainingRow], strength: float, folds: int = 5
) -> list[TrainingRow]:
    """``rows`` with each action's rate and tries recomputed from the other folds.

    A plan records the rates as they stood when it was made, uninformed for the
    first plans of a kind; a training row gets them from every outcome except
    those of its own fold (plans are assigned to folds by id), so early rows
    teach as much as late ones and no row sees its own outcome."""
    fold_of = [int(unit_hash("fold", r.plan_id) * folds) for r in rows]
    by_fold: list[SuccessRates] = []
    for fold in range(folds):
        rates = SuccessRates(strength)
        for row, f in zip(rows, fold_of, strict=True):
            if f != fold:
                rates.record(row.kind, row.action, row.target, row.success, row.severity)
        by_fold.append(rates)
    out = []
    for row, f in zip(rows, fold_of, strict=True):
        rate, tries = by_fold[f].evidence(row.kind, row.action, row.target, row.severity)
        features = row.features | {
            rate_feature(row.action): rate,
            tries_feature(row.action): float(tries),
        }
        out.append(dataclasses.replace(row, features=features))
    return out


def make_pipeline(settings: ForestSettings) -> Pipeline:
    forest = RandomForestClassifier(
        n_estimators=settings.trees,
        max_depth=settings.max_depth,
        min_samples_leaf=settings.min_samples_leaf,
        max_features=settings.max_features,
        random_state=settings.seed,
        n_jobs=1,
    )
    return Pipeline([("scale", StandardScaler()), ("forest", forest)])


def fit(
    train: Sequence[TrainingRow],
    config: PlannerConfig,
    *,
    holdout: Sequence[TrainingRow] = (),
    version: str | None = None,
) -> ModelBundle:
    """Train on ``train``; ``holdout`` gives the validation accuracy."""
    labels = np.array([r.success for r in train], dtype=int)
    if len(set(labels.tolist())) < 2:
        raise NotEnoughData(f"{len(train)} training outcomes, but not both successes and failures")
    tries = Counter((r.kind, r.action) for r in train)
    candidates: dict[str, list[ActionName]] = {}
    for (kind, action), n in tries.items():
        if n >= config.min_action_outcomes:
            candidates.setdefault(kind, []).append(action)
    now = datetime.now(UTC)
    outcomes = len(train) + len(holdout)
    bundle = ModelBundle(
        version=version or f"rf-{now:%Y%m%dT%H%M%SZ}-{outcomes}-{uuid.uuid4().hex[:6]}",
        pipeline=make_pipeline(config.forest),
        issue_features=ISSUE_FEATURES,
        actions=ACTION_NAMES,
        candidates={
            k: tuple(sorted(v, key=ACTION_NAMES.index)) for k, v in sorted(candidates.items())
        },
        min_target_tries=config.min_target_outcomes,
        success_column=0,
        outcomes=outcomes,
        holdout=len(holdout),
        validation_accuracy=None,
        trained_at=now,
        trained_on=config.trained_on,
    )
    informed = out_of_fold_rates(train, config.prior_strength)
    x = bundle.matrix([r.features for r in informed], [r.action for r in informed])
    bundle.pipeline.fit(x, labels)
    bundle.success_column = list(bundle.pipeline.classes_).index(1)
    bundle.validation_accuracy = bundle.accuracy(holdout)
    return bundle


@dataclasses.dataclass(frozen=True)
class Training:
    bundle: ModelBundle
    accepted: bool
    current_accuracy: float | None
    """The current model's accuracy on the same held-out outcomes (None: no current model)."""


def train_and_validate(
    rows: Sequence[TrainingRow], config: PlannerConfig, current: ModelBundle | None
) -> Training:
    """Train a new model and decide whether it replaces ``current``.

    It does if there is no current model, or if it is at least as accurate on
    the held-out outcomes; with no held-out outcomes it cannot be compared, so
    it does not."""
    if len(rows) < config.min_outcomes:
        raise NotEnoughData(f"{len(rows)} outcomes, {config.min_outcomes} needed")
    train, held = split(rows, config.holdout_fraction)
    bundle = fit(train, config, holdout=held)
    if current is None:
        return Training(bundle, True, None)
    current_accuracy = current.accuracy(held)
    accepted = _no_worse(bundle.validation_accuracy, current_accuracy)
    return Training(bundle, accepted, current_accuracy)


def _no_worse(new: float | None, current: float | None) -> bool:
    """Whether accuracy ``new`` is at least ``current``; unknown (no held-out outcomes) is not."""
    return new is not None and current is not None and new >= current


@dataclasses.dataclass(frozen=True)
class Adoption:
    adopt: bool
    accuracy: float | None
    """The candidate's accuracy on the held-out outcomes (None: not compared)."""
    current_accuracy: float | None


def judge_adoption(
    candidate: ModelBundle,
    current: ModelBundle | None,
    rows: Sequence[TrainingRow],
    config: PlannerConfig,
) -> Adoption:
    """Whether a model trained elsewhere (``candidate``) replaces ``current``.

    It does if there is no current model; else by the rule new models follow:
    if it is at least as accurate on this planner's held-out outcomes (the
    plans ``split`` holds out of ``rows``); with none, they cannot be compared,
    so it does not."""
    if current is None:
        return Adoption(True, None, None)
    _, held = split(rows, config.holdout_fraction)
    accuracy, current_accuracy = candidate.accuracy(held), current.accuracy(held)
    return Adoption(_no_worse(accuracy, current_accuracy), accuracy, current_accuracy)


def reproduce_ranking(plan: Plan, bundle: ModelBundle) -> list[RankedAction]:
    """Re-derive a model-made plan's ranking from its recorded features and its model."""
    if plan.model_version != bundle.version:
        raise ValueError(f"plan was made by {plan.model_version}, not {bundle.version}")
    return bundle.rank(plan.issue_kind, plan.features)
