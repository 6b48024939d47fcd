"""Fixtures of the planner tests: issues and results built to order (by
``tests.factories``), and a pickle that must never be loaded."""

from __future__ import annotations

import pathlib
import pickle
from collections.abc import Callable

import pytest

from tests import factories
from tests.factories import IssueFactory, ResultFactory


@pytest.fixture
def issue() -> IssueFactory:
    """``tests.factories.issue``: an issue event like the detector's."""
    return factories.issue


@pytest.fixture
def result() -> ResultFactory:
    """``tests.factories.result``: one step's outcome."""
    return factories.result


class _Touch:
    """Unpickling it creates ``path``: what a planted pickle could run instead."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., None], tuple[pathlib.Path]]:
        return pathlib.Path.touch, (self.path,)


@pytest.fixture
def pickle_bomb() -> Callable[[pathlib.Path], bytes]:
    """A pickle whose loading would create the file it is given."""
    return lambda path: pickle.dumps(_Touch(path))
