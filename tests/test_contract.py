"""The wire contract: schemas in docs/ match the code, and the codecs accept what the docs show."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import jsonschema
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nabij import contract
from nabij.schemas import render_schemas
from tests import roles

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
COMMAND_TYPES = (contract.SetInterval, contract.Warn, contract.Committed)
DOC_FIX = (
    b'{"device_id": "ank-0001", "seq": 1042, "ts": 1764403200123,'
    b' "lat": 52.37021, "lon": 4.89517, "acc": 8.0}'
)


def test_exported_schemas_match_the_code() -> None:
    """docs/schemas/ is exactly what `nabij export-schemas` writes today (run `make schemas`)."""
    rendered = render_schemas()
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in SCHEMA_DIR.glob("*.json")}
    assert on_disk == rendered


def test_documented_fix_validates_against_code_and_schema() -> None:
    """The example in docs/contract.md decodes, and validates against its exported schema."""
    fix = contract.fix_decoder.decode(DOC_FIX)
    assert (fix.device_id, fix.seq, fix.acc) == ("ank-0001", 1042, 8.0)
    schema = msgspec.json.decode((SCHEMA_DIR / "fix.schema.json").read_bytes())
    jsonschema.validate(msgspec.json.decode(DOC_FIX), schema)


def test_unknown_fields_are_ignored() -> None:
    """Devices may send more than the contract names (OwnTracks-style extras)."""
    fix = contract.fix_decoder.decode(DOC_FIX[:-1] + b', "_type": "location", "vel": 3}')
    assert fix.lat == 52.37021


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("lat", "NaN"),
        ("lat", "1e999"),
        ("device_id", '"ank 0001"'),
        ("seq", "-1"),
        ("ts", "1764403200"),
    ],
    ids=["nan", "infinity", "bad-id", "negative-seq", "seconds-not-ms"],
)
def test_out_of_range_fixes_are_rejected(field: str, raw: str) -> None:
    """NaN, infinity, malformed ids, negative counters and second-resolution times never decode."""
    valid = msgspec.json.decode(DOC_FIX)
    text = msgspec.json.encode({**valid, field: "__RAW__"}).decode()
    with pytest.raises(msgspec.MsgspecError):
        contract.fix_decoder.decode(text.replace('"__RAW__"', raw))


def test_role_field_sets_are_exact() -> None:
    """The police notice is every Notice field; the probation notice the listed subset, and the
    exact figures are exactly the rest; each command carries only its one field. A field added
    to the contract fails here until it is given to a role on purpose (tests/roles.py)."""
    assert set(contract.Notice.__struct_fields__) == roles.POLICE_NOTICE_FIELDS
    assert not roles.PROBATION_NOTICE_FIELDS & roles.POLICE_ONLY_NOTICE_FIELDS
    commands = {c.__struct_config__.tag: set(c.__struct_fields__) for c in COMMAND_TYPES}
    assert commands == roles.COMMAND_FIELDS


SIGNAL_WIRE: Final = {
    "type": "signal",
    "signal_id": "s-1",
    "action": "open",
    "alarm_key": "proximity_alarm:ORD-1:victim-1",
    "kind": "proximity_alarm",
    "order_id": "ORD-1",
    "offender_device": "ank-1",
    "at": 1764403200123,
    "reason": "Offender within 480 m of victim (alarm ring 500 m)",
    "victim_device": "vic-1",
    "distance_m": 480.5,
    "uncertainty_m": 12.0,
    "offender": {"lat": 52.37, "lon": 4.89, "acc": 8.0, "ts": 1764403200000},
    "victim": {"lat": 52.371, "lon": 4.891, "acc": 5.0, "ts": 1764403199000},
    "zone": "home",
    "confidence": 0.9,
    "closing_speed_mps": 1.5,
    "eta_s": 320,
    "happened_at": 1764403100000,
    "late_s": 100,
    "cause": "order_changed",
    "orders": ["ORD-1"],
}


def test_a_signal_with_every_fact_round_trips_to_the_same_json() -> None:
    """Signals and notices share their facts through one base struct: the JSON of a signal with
    every field set is what it was when the fields were listed twice (names, values, tag)."""
    signal = contract.gateway_input_decoder.decode(msgspec.json.encode(SIGNAL_WIRE))
    assert isinstance(signal, contract.AlarmSignal)
    assert msgspec.json.decode(contract.encode(signal)) == SIGNAL_WIRE
    shared = set(contract.AlarmFacts.__struct_fields__)
    assert shared <= set(contract.Notice.__struct_fields__)
    assert set(contract.AlarmSignal.__struct_fields__) - shared == {
        "signal_id",
        "action",
        "alarm_key",
    }


@pytest.mark.parametrize(
    "command",
    [
        contract.SetInterval(seconds=15),
        contract.Warn(level="alarm"),
        contract.Committed(seq=7, boot="b-1"),
    ],
    ids=str,
)
def test_encoded_commands_carry_their_fields_and_type_only(
    command: contract.DeviceDownlink,
) -> None:
    """On the wire a command is its type tag and its fields: nothing to locate anyone by."""
    wire = msgspec.json.decode(contract.encode(command))
    assert set(wire) == {"type"} | roles.COMMAND_FIELDS[wire["type"]]


def test_topics_round_trip() -> None:
    """Device topics are built and parsed under one prefix; foreign topics are not ours."""
    topics = contract.Topics("nabij/v1/")
    topic = topics.device("vic-0001", "event")
    assert topic == "nabij/v1/devices/vic-0001/event"
    assert topics.parse(topic) == ("vic-0001", "event")
    assert topics.parse("other/devices/vic-0001/event") is None
    assert topics.parse("nabij/v1/devices/vic-0001/event/extra") is None


def test_a_shards_filters_are_its_devices_topics_made_when_read() -> None:
    """Every uplink (or event) topic of each device, parsed back to it; all devices' with `+`;
    the names kept are the device ids given, not copies."""
    topics = contract.Topics("nabij/v1")
    devices = {"vic-2", "ank-1"}
    uplinks = topics.subscriptions(devices)
    assert list(uplinks) == [
        topics.device(d, kind) for d in ["ank-1", "vic-2"] for kind in ("fix", "event", "status")
    ]
    assert len(uplinks) == 6
    assert [topics.parse(t) for t in topics.events(devices)] == [
        ("ank-1", "event"),
        ("vic-2", "event"),
    ]
    assert all(any(n is d for d in devices) for n in uplinks.names)
    assert list(topics.events()) == ["nabij/v1/devices/+/event"]


_NAMES = st.text("abc", min_size=1, max_size=2)


@given(
    start=st.lists(_NAMES, max_size=6),
    changes=st.lists(st.tuples(st.booleans(), st.lists(_NAMES, max_size=4)), max_size=6),
    most=st.integers(1, 7),
)
def test_topic_filters_are_their_names_with_each_suffix_after_any_changes(
    start: list[str], changes: list[tuple[bool, list[str]]], most: int
) -> None:
    """Added names come after the others, removed ones go wherever they are; the filters read
    in parts of at most `most` (or one name's) are the same filters, in the same order."""
    filters = contract.TopicFilters(tuple(start), "p/", ("/x", "/y"))
    names = list(start)
    for add, changed in changes:
        if add:
            filters, names = filters.adding(changed), names + changed
        else:
            filters, names = filters.removing(set(changed)), [n for n in names if n not in changed]
    assert list(filters) == [f"p/{n}{s}" for n in names for s in ("/x", "/y")]
    parts = list(filters.parts(most))
    assert [t for part in parts for t in part] == list(filters)
    assert all(0 < len(part) <= max(most, 2) for part in parts)


def test_parsed_topics_are_kept_within_their_bound() -> None:
    """A topic is split once and kept; however many topics a client invents, no more than the
    bound are kept, and every answer stays right after the cache starts again."""
    topics = contract.Topics("nabij/v1", cached=10)
    for n in range(50):
        assert topics.parse(f"nabij/v1/devices/x{n}/fix") == (f"x{n}", "fix")
        assert topics.parse(f"junk/{n}") is None
        assert len(topics._parsed) <= 10
    assert topics.parse("nabij/v1/devices/vic-0001/status") == ("vic-0001", "status")
    assert topics.parse("nabij/v1/devices/vic-0001/status") == ("vic-0001", "status")


_REQUEST = {
    "type": "ack",
    "request_id": "ack-1",
    "alarm_id": "AL-1",
    "by": "officer 17",
    "via": "cli",
    "at": 1764403200123,
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("by", ""),
        ("by", "   "),
        ("by", "officer\n"),
        ("by", "officer\n12:00:00 RESOLVED"),
        ("by", "officer\r"),
        ("by", "\x1b[31mofficer"),
        ("by", "officer\x7f"),
        ("by", "officer\x85"),
        ("by", "officer\u2028"),
        ("by", "officer\u202e71"),
        ("by", "officer\u2067"),
        ("by", "x" * 129),
        ("note", "line\nline"),
        ("note", "\x1b]0;title\x07"),
        ("note", "x" * 1001),
        ("request_id", "ack-1:evil"),
        ("alarm_id", "AL-1\n"),
    ],
)
def test_operator_text_with_control_characters_is_refused_by_code_and_schema(
    field: str, value: str
) -> None:
    """The decoder refuses it naming the rule broken, and the exported schema refuses it too
    (a console validating with the schema draws the same line)."""
    raw = msgspec.json.encode({**_REQUEST, field: value})
    with pytest.raises(msgspec.ValidationError) as refused:
        contract.gateway_input_decoder.decode(raw)
    assert contract.explain_request_error(refused.value) == contract.OPERATOR_FIELD_RULES[field]
    schema = msgspec.json.decode((SCHEMA_DIR / "gateway_input.schema.json").read_bytes())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(msgspec.json.decode(raw), schema)


def test_ordinary_operator_text_is_accepted() -> None:
    """Names and notes in any script, with inner spaces and punctuation, pass."""
    raw = msgspec.json.encode({**_REQUEST, "by": "Ünal Öztürk (badge 17)", "note": "Ok — ga"})
    request = contract.gateway_input_decoder.decode(raw)
    assert isinstance(request, contract.AckRequest)
    assert (request.by, request.via) == ("Ünal Öztürk (badge 17)", "cli")
