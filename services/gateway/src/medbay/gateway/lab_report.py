"""The lab's latest report: the JSON file ``medbay lab`` writes, read for the Automation page.

The file is read when asked for, so a new lab run shows without a restart. No file
yet is the normal state before the first run; a file that cannot be read or is not
a report (``LabReport``) is answered with what is wrong, never an error of the API.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from medbay.gateway.schemas import LabReport, LabReportState

MAX_REPORT_BYTES = 1024 * 1024
"""A report is a few KB; a larger file is not one."""


def read_lab_report(path: Path | None) -> LabReportState:
    """The report at ``path`` (the gateway's ``lab_report`` option), or why there is none."""
    if path is None:
        return LabReportState(state="unconfigured", problem=None, report=None)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_REPORT_BYTES + 1)
    except FileNotFoundError:
        return LabReportState(state="missing", problem=None, report=None)
    except OSError as exc:
        return _invalid(f"cannot read {path}: {exc.strerror or exc}")
    if len(data) > MAX_REPORT_BYTES:
        return _invalid(f"{path} is over {MAX_REPORT_BYTES // 1024} KiB: not a lab report")
    try:
        report = LabReport.model_validate_json(data)
    except ValidationError as exc:
        return _invalid(f"{path} is not a lab report: {_problems(exc)}")
    return LabReportState(state="ok", problem=None, report=report)


def _invalid(problem: str) -> LabReportState:
    return LabReportState(state="invalid", problem=problem, report=None)


def _problems(exc: ValidationError) -> str:
    """The first three problems, each with where it is: ``totals.injected: Field required``."""
    found = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"])
        found.append(f"{where}: {error['msg']}" if where else error["msg"])
    more = exc.error_count() - len(found)
    return "; ".join(found) + (f" (and {more} more)" if more > 0 else "")
