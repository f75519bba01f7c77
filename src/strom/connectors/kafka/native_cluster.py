"""The I/O half of strom's own Kafka client: connections, metadata, offsets, group offsets.

:class:`Connection` is one blocking socket to one broker that negotiates API versions on
connect (ApiVersions) and lets requests be pipelined; :class:`Cluster` knows one topic's
partition leaders (Metadata) and answers the synchronous questions a source asks: ListOffsets
at each leader, OffsetFetch and OffsetCommit at the group's coordinator (FindCoordinator).
Every wait is bounded by :data:`~strom.connectors.kafka.common.CONNECT_TIMEOUT_S`; stale
leaders and moving coordinators are looked up again within it. Encoding and decoding are
:mod:`strom.connectors.kafka.native_wire`'s (sans-IO).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import numpy as np

from strom.connectors.kafka.common import (
    ALL_DOWN_GRACE_S,
    CONNECT_TIMEOUT_S,
    UNKNOWN_TOPIC_GRACE_S,
    KafkaConnectorError,
)
from strom.connectors.kafka.native_wire import (
    APIS,
    RETRIABLE,
    DecodeError,
    correlation_of,
    decode_response,
    encode_request,
    negotiate,
    response_size,
)

__all__ = ["EARLIEST", "LATEST", "Cluster", "Connection"]

#: ListOffsets' special timestamps.
EARLIEST: Final = -2
LATEST: Final = -1

_UNKNOWN_TOPIC: Final = 3
_LEADER_NOT_AVAILABLE: Final = 5
_UNSUPPORTED_VERSION: Final = 35


class Connection:
    """One socket to one broker; requests may be pipelined (responses come back in order).

    Raises ``OSError`` for anything that makes the connection unusable (refused, closed,
    timed out, an undecodable answer); the owner then drops it and connects again.
    """

    def __init__(self, host: str, port: int, client_id: str, timeout: float) -> None:
        self.address = f"{host}:{port}"
        self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.client_id = client_id
        self.versions: dict[str, int] = {}
        self._correlation = 0
        self._stash: dict[int, memoryview] = {}
        try:
            self._negotiate()
        except BaseException:
            self.sock.close()
            raise

    def _negotiate(self) -> None:
        body = self.call("ApiVersions", 3, {"client_software_name": "strom",
                                             "client_software_version": "1"})  # fmt: skip
        if body["error_code"] == _UNSUPPORTED_VERSION:  # an old broker answers in v0
            body = self.call("ApiVersions", 0, {})
        if body["error_code"]:
            raise OSError(f"ApiVersions failed with error {body['error_code']}")
        theirs = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
        for name, api in APIS.items():
            version = negotiate(api, theirs.get(api.key))
            if version is not None:
                self.versions[name] = version

    def version(self, name: str) -> int:
        try:
            return self.versions[name]
        except KeyError:
            raise KafkaConnectorError(
                f"the broker at {self.address} supports no {name} version this client speaks"
            ) from None

    def send(self, name: str, version: int, body: dict[str, Any]) -> int:
        """Send a request; its correlation id, to :meth:`receive` the answer with."""
        self._correlation += 1
        self.sock.sendall(encode_request(name, version, self._correlation, self.client_id, body))
        return self._correlation

    def receive(self, correlation: int) -> memoryview:
        """The response to ``correlation``; earlier responses read on the way are kept."""
        while correlation not in self._stash:
            frame = self._read_frame()
            self._stash[correlation_of(frame)] = frame
        return self._stash.pop(correlation)

    def has_response(self, correlation: int) -> bool:
        return correlation in self._stash

    def call(self, name: str, version: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous request (a pipelined one's answer is kept for its owner)."""
        frame = self.receive(self.send(name, version, body))
        try:
            return decode_response(name, version, frame)
        except DecodeError as exc:
            raise OSError(f"undecodable {name} response from {self.address}: {exc}") from exc

    def _read_frame(self) -> memoryview:
        try:
            size = response_size(self._read_exactly(bytearray(4)).tobytes())
            # NumPy's allocator asks the kernel for huge pages: a fresh multi-megabyte Fetch
            # response costs a fraction of what zero-filling a bytearray does.
            frame = self._read_exactly(np.empty(size, np.uint8).data)
            correlation_of(frame)
        except DecodeError as exc:
            raise OSError(f"malformed response from {self.address}: {exc}") from exc
        return frame

    def _read_exactly(self, buf: bytearray | memoryview) -> memoryview:
        view, got = memoryview(buf), 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise ConnectionError(f"{self.address} closed the connection")
            got += n
        return view

    def close(self) -> None:
        self.sock.close()


class Cluster:
    """The brokers of one topic's cluster, as seen by one client."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        client_id: str,
        socket_timeout: float,
        *,
        read_committed: bool = False,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        #: ListOffsets with isolation level 1: "latest" is the last stable offset
        self.read_committed = read_committed
        self.topic = topic
        self.client_id = client_id
        self.socket_timeout = socket_timeout
        self.leaders: dict[int, int] = {}  # partition: node id (-1 while it has none)
        self._bootstrap = _addresses(bootstrap_servers)
        self._brokers: dict[int, tuple[str, int]] = {}
        self._conns: dict[int, Connection] = {}

    # -- connections ----------------------------------------------------------------------

    def connection(self, node: int) -> Connection:
        conn = self._conns.get(node)
        if conn is None:
            if node not in self._brokers:
                raise OSError(f"broker {node} is not in the cluster's metadata")
            host, port = self._brokers[node]
            conn = Connection(host, port, self.client_id, self.socket_timeout)
            self._conns[node] = conn
        return conn

    def current(self, node: int) -> Connection | None:
        """The open connection to ``node``, if any (without connecting)."""
        return self._conns.get(node)

    def drop(self, node: int) -> None:
        conn = self._conns.pop(node, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for node in list(self._conns):
            self.drop(node)

    def _bootstrap_call(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``name`` at any broker: a known one, else a bootstrap address (connected for this
        one request)."""
        errors = []
        for node in list(self._conns) + [n for n in self._brokers if n not in self._conns]:
            try:
                conn = self.connection(node)
                return conn.call(name, conn.version(name), body)
            except OSError as exc:
                errors.append(f"{self._brokers.get(node)}: {exc}")
                self.drop(node)
        for host, port in self._bootstrap:
            try:
                conn = Connection(host, port, self.client_id, self.socket_timeout)
            except OSError as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            try:
                return conn.call(name, conn.version(name), body)
            finally:
                conn.close()
        raise OSError("; ".join(errors) or "no brokers")

    # -- metadata -------------------------------------------------------------------------

    def refresh(self, *, first: bool) -> None:
        """Brokers and partition leaders. ``first``: the first contact, which waits (bounded)
        for an unreachable cluster or a topic that does not exist yet, then fails naming both;
        later, an unreachable cluster raises ``OSError`` at once for the caller to retry."""
        started = time.monotonic()
        unknown_since: float | None = None
        request = {
            "topics": [{"name": self.topic}],
            "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": False,
        }
        while True:
            now = time.monotonic()
            try:
                body = self._bootstrap_call("Metadata", request)
            except OSError as exc:
                if not first:
                    raise
                if now - started >= (ALL_DOWN_GRACE_S if _refused(exc) else CONNECT_TIMEOUT_S):
                    raise KafkaConnectorError(
                        f"cannot reach the Kafka cluster at {self.bootstrap_servers}: {exc}"
                    ) from exc
                time.sleep(0.1)
                continue
            [meta] = [t for t in body["topics"] if t["name"] == self.topic] or [None]
            code = _UNKNOWN_TOPIC if meta is None else meta["error_code"]
            if code == 0 and meta is not None and meta["partitions"]:
                self._brokers = {b["node_id"]: (b["host"], b["port"]) for b in body["brokers"]}
                self.leaders = {
                    p["partition_index"]: p["leader_id"] if p["error_code"] == 0 else -1
                    for p in meta["partitions"]
                }
                for node in [n for n in self._conns if n not in self._brokers]:
                    self.drop(node)
                return
            if code not in (_UNKNOWN_TOPIC, _LEADER_NOT_AVAILABLE):
                raise KafkaConnectorError(
                    f"topic {self.topic!r} at {self.bootstrap_servers}: error {code}"
                )
            unknown_since = now if unknown_since is None else unknown_since
            if now - unknown_since >= UNKNOWN_TOPIC_GRACE_S:
                raise KafkaConnectorError(
                    f"topic {self.topic!r} does not exist at {self.bootstrap_servers} "
                    f"(create it, e.g. `strom topics create --topic {self.topic} "
                    "--partitions N`)"
                )
            time.sleep(0.1)

    # -- offsets --------------------------------------------------------------------------

    def list_offsets(self, partitions: Iterable[int], timestamp: int) -> dict[int, int]:
        """ListOffsets (``EARLIEST``, ``LATEST``) at each partition's leader, looking leaders up
        again while they move; ``OSError`` once ``CONNECT_TIMEOUT_S`` has passed."""
        todo = set(partitions)
        out: dict[int, int] = {}
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        failed = "no answer"
        while True:
            if not self.leaders or any(self.leaders.get(p, -1) < 0 for p in todo):
                self.refresh(first=False)
            by_leader: dict[int, list[int]] = {}
            for p in todo:
                by_leader.setdefault(self.leaders.get(p, -1), []).append(p)
            for node, parts in by_leader.items():
                try:
                    answer = self._list_at(node, parts, timestamp)
                except OSError as exc:
                    self.drop(node)
                    failed = str(exc)
                    continue
                for p, (code, offset) in answer.items():
                    if code == 0:
                        out[p] = offset
                        todo.discard(p)
                    elif code in RETRIABLE:
                        failed = f"partition {p}: error {code}"
                    else:
                        raise KafkaConnectorError(
                            f"cannot read offsets of {self.topic!r} partition {p}: error {code}"
                        )
            if not todo:
                return out
            if time.monotonic() > deadline:
                raise OSError(failed)
            time.sleep(0.1)
            self.refresh(first=False)

    def _list_at(self, node: int, parts: list[int], timestamp: int) -> dict[int, tuple[int, int]]:
        if node < 0:
            raise OSError("partition has no leader")
        conn = self.connection(node)
        body = conn.call("ListOffsets", conn.version("ListOffsets"), {
            "replica_id": -1,
            "isolation_level": 1 if self.read_committed else 0,
            "topics": [{"name": self.topic, "partitions": [
                {"partition_index": p, "current_leader_epoch": -1, "timestamp": timestamp}
                for p in parts
            ]}],
        })  # fmt: skip
        return {
            part["partition_index"]: (part["error_code"], part["offset"])
            for topic in body["topics"]
            for part in topic["partitions"]
        }

    def committed(self, group_id: str, partitions: list[int]) -> dict[int, int]:
        """The group's committed offsets (-1 where it has none)."""
        body = {
            "group_id": group_id,
            "topics": [{"name": self.topic, "partition_indexes": partitions}],
            "require_stable": False,
        }
        action = "read committed offsets"
        answer = self._coordinator_call(group_id, "OffsetFetch", body, action)
        return {
            part["partition_index"]: part["committed_offset"]
            for part in self._partitions(answer, action)
        }

    def commit(self, group_id: str, offsets: Mapping[int, int]) -> None:
        """Commit ``offsets`` (partition: next offset) as a group without members does."""
        body = {
            "group_id": group_id,
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "group_instance_id": None,
            "retention_time_ms": -1,
            "topics": [
                {
                    "name": self.topic,
                    "partitions": [
                        {"partition_index": p, "committed_offset": o, "committed_metadata": ""}
                        for p, o in offsets.items()
                    ],
                }
            ],
        }
        answer = self._coordinator_call(group_id, "OffsetCommit", body, "commit offsets")
        self._partitions(answer, "commit offsets")

    def _partitions(self, answer: dict[str, Any], action: str) -> list[dict[str, Any]]:
        """Every partition of an offsets answer; an error on any raises, naming ``action``."""
        parts = [part for topic in answer["topics"] for part in topic["partitions"]]
        for part in parts:
            if part["error_code"]:
                raise KafkaConnectorError(
                    f"cannot {action} of {self.topic!r}: partition "
                    f"{part['partition_index']} error {part['error_code']}"
                )
        return parts

    def _coordinator_call(
        self, group_id: str, name: str, body: dict[str, Any], what: str
    ) -> dict[str, Any]:
        """``name`` at the group's coordinator, found again while it moves (bounded)."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                found = self._bootstrap_call("FindCoordinator", {"key": group_id, "key_type": 0})
                if found["error_code"]:
                    last = f"FindCoordinator error {found['error_code']}"
                    time.sleep(0.1)
                    continue
                coordinator = Connection(
                    found["host"], found["port"], self.client_id, self.socket_timeout
                )
                try:
                    answer = coordinator.call(name, coordinator.version(name), body)
                finally:
                    coordinator.close()
            except OSError as exc:
                last = str(exc)
                time.sleep(0.1)
                continue
            code = answer.get("error_code", 0)
            if code in RETRIABLE:
                last = f"error {code}"
                time.sleep(0.1)
                continue
            if code:
                raise KafkaConnectorError(f"cannot {what} of {self.topic!r}: error {code}")
            return answer
        raise KafkaConnectorError(
            f"cannot {what} of {self.topic!r} at {self.bootstrap_servers}: {last}"
        )


def _addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap_servers.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bootstrap server {item!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    return out


def _refused(exc: OSError) -> bool:
    """Refused connections: the cluster is down (it may be starting: a short grace only)."""
    return isinstance(exc, ConnectionRefusedError) or "Connection refused" in str(exc)
