"""Run by an old kafka-python's interpreter (not by pytest): produce, consume and commit at one
``api_version``; prints one JSON line. Usage: check.py BOOTSTRAP API_VERSION TOPIC CODEC"""

import json
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

bootstrap, version_text, topic, codec = sys.argv[1:5]
version = tuple(int(x) for x in version_text.split("."))
producer = KafkaProducer(
    bootstrap_servers=bootstrap,
    api_version=version,
    compression_type=None if codec == "none" else codec,
    acks="all",
)
futures = [producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0) for i in range(10)]
producer.flush()
offsets = [f.get(timeout=10).offset for f in futures]
producer.close()
consumer = KafkaConsumer(
    bootstrap_servers=bootstrap,
    api_version=version,
    group_id="group-" + topic,
    enable_auto_commit=False,
    auto_offset_reset="earliest",
    consumer_timeout_ms=3000,
)
tp = TopicPartition(topic, 0)
consumer.assign([tp])
got = [[m.offset, m.key.decode(), m.value.decode(), m.timestamp] for m in consumer]
consumer.commit({tp: OffsetAndMetadata(4, "meta")})
committed = consumer.committed(tp)
consumer.close()
print(json.dumps({"offsets": offsets, "got": got, "committed": committed}))
