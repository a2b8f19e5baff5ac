"""Adapter names and quantization in server info: parsed at the border like every other field."""

from __future__ import annotations

import pytest

from corolla.p2p.errors import ProtocolError
from corolla.p2p.records import MAX_ADAPTERS, ServerInfo

BASE = {"peer_id": "p", "model_name": "m", "model_hash": "h", "start": 0, "end": 4}


def test_adapter_names_round_trip_and_default_to_none():
    info = ServerInfo(**BASE, adapters=["greeter", "sql-v2.1"])
    assert ServerInfo.from_wire(info.to_wire()).adapters == ["greeter", "sql-v2.1"]
    assert ServerInfo.from_wire(dict(BASE)).adapters == []  # a server of an older release says nothing


@pytest.mark.parametrize("adapters", ["greeter", ["ok", 3], ["a/b"], [""], ["x" * 65], ["a", "a"],
                                      [f"a{i}" for i in range(MAX_ADAPTERS + 1)], {"a": 1}])
def test_malformed_adapter_lists_are_refused(adapters):
    with pytest.raises(ProtocolError, match="adapter"):
        ServerInfo.from_wire({**BASE, "adapters": adapters})


def test_quantization_round_trips_defaults_to_none_and_must_be_known():
    info = ServerInfo(**BASE, quant="int4")
    assert ServerInfo.from_wire(info.to_wire()).precision == ("float32", "int4")
    assert ServerInfo.from_wire(dict(BASE)).quant == "none"  # a server of an older release says nothing
    for bad in ("int3", "", 4):
        with pytest.raises(ProtocolError, match="quant"):
            ServerInfo.from_wire({**BASE, "quant": bad})
