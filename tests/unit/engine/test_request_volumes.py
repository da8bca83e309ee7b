"""The launch request's "volumes": the shape the launcher sends, and one named refusal per defect."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Dict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citadel.engine.request import parse_request
from citadel.errors import UsageError

IMAGE_KEY = "ab" * 32
VOLUME_KEY = "cd" * 32
TAG = "ef" * 32


def volume(**fields: Any) -> Dict[str, Any]:
    base = {"name": "out", "host_dir": "/srv/vol-out", "mount": "/data/out", "key": VOLUME_KEY,
            "expected_tag": None, "policy": "rollback-protected", "tag_store": "/home/owner/tags.json"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def doc(*volumes: Dict[str, Any], cas: bool = False) -> bytes:
    request: Dict[str, Any] = {"version": 1, "image": "/img", "key": None if cas else IMAGE_KEY,
                               "expected_tag": None, "argv": ["app.py"], "module": None, "interactive": False,
                               "cwd": "/tmp", "volumes": list(volumes)}
    if cas:
        request["cas"] = {"addr": "cas:8081"}
    return json.dumps(request).encode()


def test_a_volume_entry_is_parsed_and_its_key_never_shown() -> None:
    req = parse_request(doc(volume(expected_tag=TAG.upper(), create=True),
                            volume(name="in", host_dir="/srv/in/", mount="/data//in/", policy="ephemeral",
                                   tag_store=None, read_only=True)))
    out, inp = req.volumes
    assert (out.name, out.host_dir, out.mount, out.key, out.expected_tag, out.policy, out.tag_store, out.create,
            out.read_only) == ("out", "/srv/vol-out", "/data/out", bytes.fromhex(VOLUME_KEY), TAG,
                               "rollback-protected", "/home/owner/tags.json", True, False)
    assert (inp.host_dir, inp.mount, inp.policy, inp.read_only) == ("/srv/in", "/data/in", "ephemeral", True)
    assert VOLUME_KEY not in repr(req) and VOLUME_KEY not in repr(out)


def test_no_volumes_and_defaults() -> None:
    assert parse_request(doc()).volumes == []
    spec = parse_request(doc(volume(policy=..., tag_store=..., expected_tag=...))).volumes[0]
    assert (spec.policy, spec.tag_store, spec.create, spec.read_only) == ("rollback-protected", None, False, False)


def test_in_the_cas_flow_the_key_may_come_later() -> None:
    assert parse_request(doc(volume(key=None), cas=True)).volumes[0].key is None


@pytest.mark.parametrize("entry, fragment", [
    ("not an object", "volume 0 of the launch request is not an object"),
    (volume(name="../etc"), "has no valid name"),
    (volume(name="-x"), "has no valid name"),
    (volume(name="x" * 129), "has no valid name"),
    (volume(colour="blue"), "has an unknown field 'colour'"),
    (volume(host_dir="vol"), "'host_dir' of volume 'out' of the launch request is not an absolute path"),
    (volume(mount="data/out"), "'mount' of volume 'out' of the launch request is not an absolute path"),
    (volume(mount=...), "needs both 'host_dir' and 'mount'"),
    (volume(mount="/"), "is mounted at '/'"),
    (volume(key=None), "volume 'out' of the launch request has no key"),
    (volume(key="12"), "is not 64 hex digits"),
    (volume(expected_tag="zz"), "expected tag of volume 'out'"),
    (volume(policy="forever"), "the policy of volume 'out' of the launch request is 'forever'"),
    (volume(policy="ephemeral"), "is ephemeral but names a tag store"),
    (volume(create="yes"), "'create' of volume 'out' of the launch request is not true or false"),
    (volume(create=True, read_only=True), "is to be created but is read-only"),
])
def test_each_defect_is_named(entry: Any, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_request(doc(entry))
    assert fragment in caught.value.cause
    assert VOLUME_KEY not in caught.value.cause + caught.value.remedy


def test_volumes_must_be_a_list_with_unique_names() -> None:
    with pytest.raises(UsageError, match="'volumes' is not a list"):
        parse_request(json.dumps({**json.loads(doc()), "volumes": {"out": {}}}).encode())
    with pytest.raises(UsageError, match="names the volume 'out' twice"):
        parse_request(doc(volume(), volume(mount="/data/other")))


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                                   max_size=4), max_leaves=12)


@settings(max_examples=150)
@given(st.dictionaries(st.sampled_from(["name", "host_dir", "mount", "key", "expected_tag", "policy",
                                        "tag_store", "create", "read_only", "other"]), _json, max_size=9))
def test_arbitrary_volume_entries_are_accepted_or_refused_with_usage_error(entry: Dict[str, Any]) -> None:
    with contextlib.suppress(UsageError):
        parse_request(doc(entry))
