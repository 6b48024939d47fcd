"""Names the parsers show, kept here so that building them imports nothing heavy.

A test keeps each equal to the catalogue it mirrors.
"""

from __future__ import annotations

STREAM_NAMES = (
    "METRICS",
    "ISSUES",
    "PLANS",
    "APPROVALS",
    "RESULTS",
    "REQUESTS",
    "AUDIT",
    "DEADLETTER",
)
"""= ``medbay.common.streams.STREAMS_BY_NAME``."""

DETECTOR_NAMES = ("likelihood", "novelty", "sigma3")
"""= sorted ``medbay.detector.anomaly.DETECTORS``."""

DEFAULT_DETECTOR = "novelty"
"""= ``medbay.detector.anomaly.DEFAULT_DETECTOR``."""
