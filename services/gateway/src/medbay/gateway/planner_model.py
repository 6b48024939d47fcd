"""The planner's current model and success rates, as the planner stores them.

The planner's storage is named in ``medbay.common.records``: KV bucket
``PLANNER_STATE`` (the current version's name; the success rates as JSON) and
object store ``MODELS`` (one object per version, its description a JSON
summary). Only the descriptions are read here, never a model itself.

A description says what its model learned from (``trained_on``: ``live`` outcomes or
the ``lab``'s injected faults); one without it comes from before models were
trained in the lab, so from live outcomes.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, ObjectNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from medbay.common.access import MODELS
from medbay.common.records import CURRENT_MODEL_KEY, PLANNER_STATE, SUCCESS_RATES_KEY
from medbay.gateway.schemas import ActionRate, PlannerModel

log = logging.getLogger(__name__)

PLANNER_BUCKET = PLANNER_STATE.name
MODELS_BUCKET = MODELS.name


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


M = TypeVar("M", bound=_Lenient)


class _Description(_Lenient):
    trained_on: Literal["live", "lab"] = "live"
    validation_accuracy: float | None = None
    trained_at: datetime | None = None
    training_outcomes: int | None = None
    holdout_outcomes: int | None = None
    candidates: dict[str, list[str]] = {}


class _Rates(_Lenient):
    actions: dict[str, ActionRate] = {}
    kinds: dict[str, dict[str, ActionRate]] = {}


class PlannerModelReader:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def read(self) -> PlannerModel:
        try:
            kv = await self.js.key_value(PLANNER_BUCKET)
        except BucketNotFoundError:  # the planner has not run yet
            return _model(None, None, _Rates())
        version = await _get(kv, CURRENT_MODEL_KEY)
        rates = _parse(_Rates, await _get(kv, SUCCESS_RATES_KEY), "success rates") or _Rates()
        description = None
        if version:
            try:
                objects = await self.js.object_store(MODELS_BUCKET)
                info = await objects.get_info(version)
                description = _parse(_Description, info.description, f"model {version}")
            except (BucketNotFoundError, ObjectNotFoundError):
                log.warning("current model %s is not in the object store", version)
        return _model(version or None, description, rates)


async def _get(kv: KeyValue, key: str) -> str | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return (entry.value or b"").decode() or None


def _parse(model: type[M], text: str | None, what: str) -> M | None:
    """``text`` read as ``model``; None if there is none, or it cannot be read (logged)."""
    if not text:
        return None
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        log.warning("unreadable %s from the planner: %s", what, exc.errors()[:1])
        return None


def _model(version: str | None, description: _Description | None, rates: _Rates) -> PlannerModel:
    """The model as the API shows it; what its ``description`` (None: unknown) does not say
    is None."""
    known = description or _Description()
    return PlannerModel(
        version=version,
        trained_on=None if description is None else description.trained_on,
        validation_accuracy=known.validation_accuracy,
        trained_at=known.trained_at,
        training_outcomes=known.training_outcomes,
        holdout_outcomes=known.holdout_outcomes,
        candidates=known.candidates,
        success_rates=rates.actions,
        success_rates_by_kind=rates.kinds,
    )
