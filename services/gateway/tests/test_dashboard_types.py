"""The dashboard's TypeScript types (``dashboard/src/api/types.ts``) against what the
gateway serves: every interface's fields, whether each may be missing or null, and
the values of its string unions, against the OpenAPI document (``/openapi.json``),
or for events only the WebSocket carries, against the event models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from medbay.common.events import ALL_EVENTS
from medbay.gateway.api import build_app
from medbay.gateway.config import GatewayConfig
from medbay.gateway.service import GatewayService

TYPES = Path(__file__).parents[1] / "dashboard" / "src" / "api" / "types.ts"
RENAMED = {"QuickActionRequest": "QuickAction"}
"""TypeScript name -> schema name, where they differ."""
WEBSOCKET_ONLY = {"HelloMessage", "SubscribedMessage", "ErrorMessage"}
"""Messages of ``/ws`` alone (``medbay.gateway.ws``): in no schema."""
EVENT_SCHEMAS = {
    str(model.model_fields["type"].default): model.model_json_schema(mode="serialization")
    for model in ALL_EVENTS
}

_INTERFACE = re.compile(
    r"^(export )?interface (\w+)(?: extends ([\w, ]+))? \{\n(.*?)^\}", re.MULTILINE | re.DOTALL
)
_FIELD = re.compile(r"^  (\w+)(\?)?: (.+);$", re.MULTILINE)
_ALIAS = re.compile(r"^export type (\w+) =\s*((?:\s*\|?\s*'[^']*')+);", re.MULTILINE)
_LITERAL = re.compile(r"'([^']*)'")


class Field:
    def __init__(self, optional: bool, ts_type: str) -> None:
        self.optional = optional
        self.type = re.sub(r"/\*.*?\*/", "", ts_type).strip()


def parse(text: str) -> tuple[dict[str, dict[str, Field]], dict[str, set[str]]]:
    """Interfaces (with the fields they inherit) and string-literal aliases."""
    text = re.sub(r"^\s*/\*\*.*?\*/\n", "", text, flags=re.MULTILINE | re.DOTALL)  # doc comments
    raw = {m[2]: (m[3], m[4]) for m in _INTERFACE.finditer(text)}
    exported = {m[2] for m in _INTERFACE.finditer(text) if m[1]}
    aliases = {m[1]: set(_LITERAL.findall(m[2])) for m in _ALIAS.finditer(text)}

    def fields(name: str) -> dict[str, Field]:
        bases, body = raw[name]
        found: dict[str, Field] = {}
        for base in (bases or "").replace(" ", "").split(","):
            if base:
                found.update(fields(base))
        found.update({m[1]: Field(bool(m[2]), m[3]) for m in _FIELD.finditer(body)})
        return found

    # bases not exported (EventBase) are checked as parts of what extends them
    return {name: fields(name) for name in raw if name in exported}, aliases


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    registry = CollectorRegistry()
    service = GatewayService(GatewayConfig(), registry=registry, max_event_bytes=1024)
    app = build_app(service, registry=registry, own_health=lambda: (True, {}))
    found: dict[str, Any] = app.openapi()["components"]["schemas"]
    return found


def schema_for(name: str, fields: dict[str, Field], schemas: dict[str, Any]) -> dict[str, Any]:
    name = RENAMED.get(name, name)
    if name in schemas:
        return dict(schemas[name])
    event_type = _LITERAL.findall(fields["type"].type) if "type" in fields else []
    if len(event_type) == 1 and event_type[0] in EVENT_SCHEMAS:
        return EVENT_SCHEMAS[event_type[0]]
    for schema in EVENT_SCHEMAS.values():  # a part of an event (MetricSample)
        for part_name, part in schema.get("$defs", {}).items():
            if part_name == name:
                return dict(part)
    raise AssertionError(f"{name}: in no schema; add it to the API or to WEBSOCKET_ONLY")


def variants(prop: dict[str, Any], schemas: dict[str, Any], defs: dict[str, Any]) -> list[Any]:
    options = prop.get("anyOf") or prop.get("oneOf") or [prop]
    resolved = []
    for option in options:
        ref = option.get("$ref", "")
        name = ref.rsplit("/", 1)[-1]
        resolved.append((schemas.get(name) or defs.get(name)) if ref else option)
    return resolved


def literals(prop: dict[str, Any], schemas: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for option in variants(prop, schemas, defs):
        if option and "enum" in option:
            found |= {str(v) for v in option["enum"]}
        elif option and "const" in option:
            found.add(str(option["const"]))
    return found


def problems_in(text: str, schemas: dict[str, Any]) -> list[str]:
    interfaces, aliases = parse(text)
    assert {"IncidentDetail", "PendingApproval", "Plan", "EventMessage"} <= set(interfaces)
    problems = []
    for name, fields in sorted(interfaces.items()):
        if name in WEBSOCKET_ONLY:
            continue
        schema = schema_for(name, fields, schemas)
        defs = schema.get("$defs", {})
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        for missing in sorted(set(props) - set(fields)):
            problems.append(f"{name}.{missing}: served, not declared")
        for field_name, field in fields.items():
            prop = props.get(field_name)
            if prop is None:
                problems.append(f"{name}.{field_name}: declared, not served")
                continue
            # every field is serialized, a defaulted one too: a required one must be declared so
            if field.optional and field_name in required:
                problems.append(f"{name}.{field_name}: always served, declared optional")
            nullable = any(o and o.get("type") == "null" for o in variants(prop, schemas, defs))
            if nullable != bool(re.search(r"\bnull\b", field.type)):
                problems.append(f"{name}.{field_name}: null {'allowed' if nullable else 'never'}")
            served = literals(prop, schemas, defs)
            bare = re.sub(r"\s*\|\s*null\b", "", field.type).strip()
            declared = aliases.get(bare) or set(_LITERAL.findall(bare))
            if served and declared and served != declared:
                problems.append(f"{name}.{field_name}: {sorted(declared)} != {sorted(served)}")
    return problems


def test_types_ts_declares_what_the_api_serves(schemas):
    problems = problems_in(TYPES.read_text(), schemas)
    assert problems == [], "\n".join(problems)


def test_the_check_finds_a_field_out_of_step(schemas):
    text = TYPES.read_text()
    changes = {
        "  deadline: string | null;": "  deadline_at?: string;",  # in PendingApproval
        "  recurrences: number;": "  recurrences?: number;",
        "  resolved_at: string | null;\n  plans": "  resolved_at: string;\n  plans",  # Episode
        "'warning' | 'critical'": "'warning' | 'critical' | 'fatal'",
        "  info: Record<string, unknown>;\n": "",
    }
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    assert sorted(problems_in(text, schemas)) == sorted(
        [
            "PendingApproval.deadline: served, not declared",
            "PendingApproval.deadline_at: declared, not served",
            "IncidentSummary.recurrences: always served, declared optional",
            "IncidentDetail.recurrences: always served, declared optional",
            "Episode.resolved_at: null allowed",
            "ServiceHealth.info: served, not declared",
            *(
                f"{name}.{field}: ['critical', 'fatal', 'warning'] != ['critical', 'warning']"
                for name, field in [
                    ("IncidentDetail", "severity"),
                    ("IncidentSummary", "severity"),
                    ("IssueOpened", "severity"),
                    ("IssueResolved", "severity"),
                    ("IssueSummary", "severity"),
                    ("IssueUpdated", "severity"),
                    ("IssueUpdated", "previous_severity"),
                    ("Plan", "severity"),
                ]
            ),
        ]
    )
