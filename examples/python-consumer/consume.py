#!/usr/bin/env python3
"""Reads a Scanloop event topic and prints each event, decoded, as one JSON line.

The messages come from the descriptor set shipped with the contracts (proto/scanloop.binpb in
the repository, /usr/share/scanloop/scanloop.binpb in the image): no protoc, no generated code.
What it shows a consumer (docs/events.md):

- the record value is a scanloop.common.v1.EventEnvelope; its `event_type` is the full name of
  the payload's message, so the payload decodes with the class of that name;
- delivery is at-least-once: a (stream_id, version) already applied is dropped;
- `schema_version` above what this consumer knows for a type is refused, never guessed at;
- the envelope is mirrored in `scanloop.*` headers (and `traceparent`); empty ones are omitted.

    python consume.py --topic scanloop.activation.events.v1 --from-beginning

Output lines: {"kind": "event", ...} for an applied event, {"kind": "duplicate", ...} for a
redelivery that was dropped, and {"kind": "refused", ...} for a schema version it does not know,
after which it stops (exit status 3) without committing that record's offset.
"""

import argparse
import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError
from google.protobuf import descriptor_pb2, json_format, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DESCRIPTORS = [
    os.path.join(HERE, "..", "..", "proto", "scanloop.binpb"),
    "/usr/share/scanloop/scanloop.binpb",
]
ENVELOPE = "scanloop.common.v1.EventEnvelope"

# Payload schema versions this consumer understands; 1 for every type not listed. A newer
# version changed the payload's meaning (docs/events.md, "Schema versions"), so an
# event above it is refused until the consumer learns it. (Version 2 of these two names lots by
# lot_id; their version-1 events, older ones on the topic, decode too, with lot_id empty.)
KNOWN_SCHEMA_VERSIONS = {
    "scanloop.membership.v1.PointsEarned": 2,
    "scanloop.membership.v1.PointsExpired": 2,
}


def load_messages(path):
    """Every message class in the descriptor set, by full name."""
    with open(path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    return message_factory.GetMessages(files)


def to_dict(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def decode(record, messages):
    """The record as a dict: headers, envelope and payload (decoded by event_type)."""
    envelope = messages[ENVELOPE].FromString(record.value())
    payload_class = messages.get(envelope.event_type)
    if payload_class is None:
        raise ValueError(f"unknown event_type {envelope.event_type!r}: update the descriptor set")
    payload = payload_class.FromString(envelope.payload)
    header = {key: value.decode() for key, value in (record.headers() or [])}
    envelope_fields = to_dict(envelope)
    envelope_fields.pop("payload", None)
    return {
        "topic": record.topic(),
        "partition": record.partition(),
        "offset": record.offset(),
        "key": record.key().decode() if record.key() is not None else None,
        "headers": header,
        "envelope": envelope_fields,
        "payload": to_dict(payload),
    }, envelope


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default=os.environ.get("SCANLOOP_KAFKA_BROKERS", "127.0.0.1:9092"))
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", help="consumer group (default: a new one each run)")
    parser.add_argument("--from-beginning", action="store_true", help="a new group starts at the oldest record")
    parser.add_argument("--descriptors", help="FileDescriptorSet path (default: the repository's, else the image's)")
    parser.add_argument("--max-events", type=int, help="exit 0 after this many applied events")
    parser.add_argument("--timeout", type=float, help="exit 1 if --max-events is not reached in this many seconds")
    args = parser.parse_args()

    path = args.descriptors or next((p for p in DEFAULT_DESCRIPTORS if os.path.exists(p)), None)
    if path is None:
        sys.exit("no descriptor set found: pass --descriptors")
    messages = load_messages(path)

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group or f"python-consumer-{uuid.uuid4()}",
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        # Offsets are committed only after an event is handled (printed): at-least-once.
        "enable.auto.commit": False,
    })
    consumer.subscribe([args.topic])
    # (stream_id -> highest version applied). A real consumer keeps this with its own state,
    # in the same transaction, so a restart drops what it already applied.
    applied = {}
    handled = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while args.max_events is None or handled < args.max_events:
            if deadline is not None and time.monotonic() > deadline:
                print(f"timed out after {handled} events", file=sys.stderr)
                return 1
            record = consumer.poll(0.5)
            if record is None:
                continue
            if record.error():
                if record.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise SystemExit(f"kafka: {record.error()}")
            line, envelope = decode(record, messages)
            known = KNOWN_SCHEMA_VERSIONS.get(envelope.event_type, 1)
            if envelope.version <= applied.get(envelope.stream_id, 0):
                line = {"kind": "duplicate", "stream_id": envelope.stream_id, "version": envelope.version}
            elif envelope.schema_version > known:
                # Stop before it, its offset not committed: reading on would misread it. The
                # consumer resumes here once it learns the version.
                print(json.dumps({"kind": "refused", "event_type": envelope.event_type,
                                  "schema_version": envelope.schema_version, "known": known,
                                  "stream_id": envelope.stream_id, "version": envelope.version},
                                 sort_keys=True), flush=True)
                return 3
            else:
                applied[envelope.stream_id] = envelope.version
                handled += 1
                line = {"kind": "event", **line}
            print(json.dumps(line, ensure_ascii=False, sort_keys=True), flush=True)
            consumer.commit(message=record, asynchronous=False)
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
