"""``medbay schema export``: JSON Schemas of every event and the AsyncAPI document.

Both are generated from the event models and the subject catalogue in
``medbay.common``, so the documents cannot drift from the code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schema", help="event contracts")
    actions = p.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write JSON Schemas and the AsyncAPI document")
    export.add_argument("--out", type=Path, default=Path("docs/contracts"), help="directory")
    export.set_defaults(func=run)


def event_schemas() -> dict[str, dict[str, Any]]:
    from medbay.common.events import ALL_EVENTS

    return {model.__name__: model.model_json_schema(mode="serialization") for model in ALL_EVENTS}


def asyncapi_document() -> dict[str, Any]:
    """An AsyncAPI 3.0 document: one channel per subject pattern, one message per event."""
    from medbay.common.access import PUBLISHERS
    from medbay.common.events import METRIC_BATCH_VERSION, SCHEMA_VERSION
    from medbay.common.streams import CHANNELS

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for name, schema in event_schemas().items():
        defs = schema.pop("$defs", {})
        schemas.update(defs)
        schemas[name] = schema
    for pattern, stream, model in CHANNELS:
        channel_id = pattern.replace(".", "_").replace("{", "").replace("}", "")
        params = {
            part.strip("{}"): {"description": f"the event's {part.strip('{}')}"}
            for part in pattern.split(".")
            if part.startswith("{")
        }
        messages[model.__name__] = {
            "name": model.__name__,
            "title": model.__name__,
            "summary": (model.__doc__ or model.__name__).strip().splitlines()[0],
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "description": "= event_id; deduplicates"},
                    "traceparent": {"type": "string", "description": "W3C trace context"},
                },
            },
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        }
        channels[channel_id] = {
            "address": pattern,
            "description": f"Stored in JetStream stream {stream.name} (declared by the "
            f"{stream.owner}).",
            "parameters": params,
            "messages": {model.__name__: {"$ref": f"#/components/messages/{model.__name__}"}},
        }
        publishers = ", ".join(PUBLISHERS[stream.name])
        operations[f"publish{model.__name__}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"Published by: {publishers} (each on its own subjects).",
        }
    channels["medbay_deadletter_service_stream"] = {
        "address": "medbay.deadletter.{service}.{stream}",
        "description": "Rejected messages with Medbay-DL-* headers giving the reason, source "
        "stream, subject and sequence; payloads over 64 KiB are cut (Medbay-DL-Truncated).",
        "parameters": {
            "service": {"description": "the service that rejected it"},
            "stream": {"description": "the stream the message came from"},
        },
    }
    text = json.dumps(
        {
            "asyncapi": "3.0.0",
            "info": {
                "title": "Medbay events",
                "version": str(max(SCHEMA_VERSION, METRIC_BATCH_VERSION)),
                "description": "Every event Medbay publishes on NATS JetStream.",
            },
            "defaultContentType": "application/json",
            "channels": channels,
            "operations": operations,
            "components": {"messages": messages, "schemas": schemas},
        }
    )
    # pydantic's refs point at #/$defs; in AsyncAPI they live in components
    document: dict[str, Any] = json.loads(text.replace("#/$defs/", "#/components/schemas/"))
    return document


def export(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in event_schemas().items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    path = out / "asyncapi.json"
    path.write_text(json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n")
    written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    try:
        written = export(args.out)
    except OSError as exc:
        where = exc.filename or args.out
        raise SystemExit(
            f"medbay schema export: cannot write to {args.out} ({where}: "
            f"{exc.strerror or exc}); --out must be a directory, or where one can be made"
        ) from None
    for path in written:
        print(path)
    return 0
