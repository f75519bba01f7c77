"""The request versions KIP-896 removed in Kafka 4 are restored from Kafka 3.9's lower bounds.

kafka-python 3 ships Kafka 4's specs; strom lowers ``validVersions`` back to 3.9's. Every
restored version must compile and carry the fields that version defines (and only those).
"""

from __future__ import annotations

import pytest

from strom.kafka.protocol.codec import codec_for
from strom.kafka.protocol.spec import KAFKA_3_9_LOWEST, load

RESTORED = sorted(KAFKA_3_9_LOWEST.items())


@pytest.mark.parametrize(("api", "lowest"), RESTORED)
def test_restored_versions_compile(api: str, lowest: int) -> None:
    for kind in ("Request", "Response"):
        spec = load(api + kind)
        assert spec.valid.lo == lowest
        for version in range(lowest, spec.valid.hi + 1):
            codec_for(api + kind, version)  # raises if any field cannot be compiled


@pytest.mark.parametrize(
    ("name", "version", "present", "absent"),
    [
        ("OffsetCommitRequest", 0, [], ["generation_id_or_member_epoch", "member_id"]),
        ("OffsetCommitRequest", 1, ["generation_id_or_member_epoch", "member_id"], []),
        ("ListOffsetsRequest", 0, [], ["isolation_level"]),
        ("ProduceRequest", 2, ["acks"], ["transactional_id"]),
        ("FetchRequest", 2, ["max_wait_ms"], ["max_bytes", "isolation_level"]),
        ("FetchRequest", 3, ["max_bytes"], ["isolation_level"]),
        ("DescribeConfigsRequest", 0, ["resources"], ["include_synonyms"]),
    ],
)
def test_old_shapes(name: str, version: int, present: list[str], absent: list[str]) -> None:
    """Decoding an all-defaults body shows which fields a version carries on the wire."""
    codec = codec_for(name, version)
    encoded = codec.encode({})
    # A field absent from the version adds no bytes: re-encoding with it set changes nothing.
    for field in absent:
        assert codec.encode({field: 1 if "id" not in field else "x"}) == encoded, field
    for field in present:
        assert field in codec.decode(encoded)


def test_offset_commit_v1_partition_timestamp_and_list_offsets_v0_max_offsets() -> None:
    commit = codec_for("OffsetCommitRequest", 1)
    body = {
        "group_id": "g",
        "generation_id_or_member_epoch": 3,
        "member_id": "m",
        "topics": [
            {
                "name": "t",
                "partitions": [
                    {"partition_index": 0, "committed_offset": 5, "commit_timestamp": 77}
                ],
            }
        ],
    }
    decoded = commit.decode(commit.encode(body))
    assert decoded["topics"][0]["partitions"][0]["commit_timestamp"] == 77
    assert (
        codec_for("OffsetCommitRequest", 2).decode(
            codec_for("OffsetCommitRequest", 2).encode(body)
        )["topics"][0]["partitions"][0]["commit_timestamp"]
        == -1
    )  # v1 only
    offsets = codec_for("ListOffsetsRequest", 0)
    req = {
        "replica_id": -1,
        "topics": [
            {
                "name": "t",
                "partitions": [{"partition_index": 0, "timestamp": -1, "max_num_offsets": 9}],
            }
        ],
    }
    assert offsets.decode(offsets.encode(req))["topics"][0]["partitions"][0]["max_num_offsets"] == 9
    response = codec_for("ListOffsetsResponse", 0)
    answer = {
        "topics": [
            {
                "name": "t",
                "partitions": [
                    {"partition_index": 0, "error_code": 0, "old_style_offsets": [5, 0]}
                ],
            }
        ]
    }
    assert response.decode(response.encode(answer))["topics"][0]["partitions"][0][
        "old_style_offsets"
    ] == [5, 0]
