"""Pure helpers of the Kafka channel layer: where a name lives, how a record's key reads."""

import zlib

CHANNEL_KEY = b"c"
GROUP_KEY = b"g"
FENCE_KEY = b"f"  # marks where a group member starts reading (no message)


def partition_for(name: str, partitions: int) -> int:
    """Return the partition of a group or a process inbox; every process computes the same."""
    return zlib.crc32(name.encode()) % partitions


def inbox_of(channel: str) -> str:
    """Return the process part of a process-specific channel name ("specific.<process>!<id>")."""
    head, _, _ = channel.partition("!")
    return head.rpartition(".")[2]


def record_key(kind: bytes, name: str) -> bytes:
    """Key a record with what it is addressed to: a channel or a group."""
    return kind + b":" + name.encode()


def parse_record_key(key: bytes) -> tuple[bytes, str]:
    """Split a record key into its kind and the channel or group name."""
    kind, _, name = key.partition(b":")
    return kind, name.decode()
