"""A Channels layer over Kafka, built for fan-out by interest.

All traffic goes through one topic. A group's messages are keyed to one partition (a hash of
the group name), and so is each process's inbox of process-specific channels. Each process
reads, by manual assignment from the end of the log and with no consumer group, only its inbox
partition and the partitions of groups it has local members in, and fans group messages out
to those members itself. So a replica that watches no manager of a team reads none of its
partitions (unless a hash collision puts the team beside one it does watch; more partitions,
fewer collisions), and adding a replica adds no broker traffic for teams it does not watch.

Delivery is at most once and tuned for latency: no idempotence, no retries, a small linger and a
short message timeout. `send` and `group_send` never wait for the broker (a full local producer
queue drops and counts); `group_send_many` returns only once the broker acknowledged every
record, through the producer's delivery reports, and raises if one failed: the relay
acknowledges devices on it. Messages to a channel of the same process never leave the process.

The layer keeps one producer, one consumer and one polling thread per event loop, like
channels_redis keeps connections per loop. See docs/architecture.md for the design and
docs/operations.md for broker loss and recovery.
"""

import asyncio
import contextlib
import logging
import queue
import threading
import time
import uuid
import weakref
from collections import Counter

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tracking.layers.utils import (
    CHANNEL_KEY,
    GROUP_KEY,
    inbox_of,
    parse_record_key,
    partition_for,
    record_key,
)

logger = logging.getLogger(__name__)

POLL_TIMEOUT = 0.02  # seconds the polling thread waits for records before serving commands
BROKER_TIMEOUT = 5.0  # seconds for metadata, topic creation and offset look-ups
PROBE_INTERVAL = 1.0  # seconds between broker probes while the broker is lost
# Seconds the broker must stay reachable before an outage is over: clients reconnecting after a
# restart may report it down once more, and one outage should read as one in the logs.
STABLE_AFTER = 5.0


class KafkaChannelLayer(BaseChannelLayer):
    """Channel layer over one Kafka topic; groups and process inboxes are partitions."""

    extensions = ["groups", "flush", "group_send_many"]

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "teamtrack-layer",
        partitions: int = 32,
        replication_factor: int = 1,
        expiry: int = 60,
        capacity: int = 100,
        channel_capacity=None,
        producer_config: dict | None = None,
        consumer_config: dict | None = None,
    ):
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.producer_config = producer_config or {}
        self.consumer_config = consumer_config or {}
        # Drops and failures, for /metrics and tests: group_send_dropped, receive_dropped, ...
        self.metrics: Counter[str] = Counter()
        self._loop_layers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _layer(self) -> "_LoopLayer":
        loop = asyncio.get_running_loop()
        layer = self._loop_layers.get(loop)
        if layer is None:
            layer = self._loop_layers[loop] = _LoopLayer(self, loop)
        return layer

    # ------------------------------------------------------------------ channel layer API

    async def send(self, channel: str, message: dict) -> None:
        """Send a message to a channel; raise ChannelFull if it cannot take more."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        await self._layer().send(channel, message)

    async def receive(self, channel: str) -> dict:
        """Receive the next message on a channel of this process, waiting for one."""
        self.require_valid_channel_name(channel)
        return await self._layer().receive(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new process-specific channel name that this process receives on."""
        return await self._layer().new_channel(prefix)

    # ------------------------------------------------------------------ groups extension

    async def group_add(self, group: str, channel: str) -> None:
        """Add a channel of this process to a group; start reading the group's partition."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._layer().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a channel from a group; stop reading its partition when nothing needs it."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._layer().group_discard(group, channel)

    async def group_send(self, group: str, message: dict) -> None:
        """Send a message to every member of a group, in every process; never wait or raise."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        await self._layer().group_send(group, message)

    # ------------------------------------------------------------------ group_send_many extension

    async def group_send_many(self, messages: list[tuple[str, dict]]) -> None:
        """Send each (group, message) pair, batched by the producer; return once the broker
        acknowledged them all, or raise KafkaException if one was not written."""
        for group in {group for group, _ in messages}:
            self.require_valid_group_name(group)
        await self._layer().group_send_confirmed(messages)

    # ------------------------------------------------------------------ flush extension

    async def flush(self) -> None:
        """Forget every channel and group of this event loop and close its clients."""
        layer = self._loop_layers.pop(asyncio.get_running_loop(), None)
        if layer is not None:
            await layer.close()

    # ------------------------------------------------------------------ health

    async def ping(self) -> None:
        """Raise if the broker does not answer a metadata request."""
        await self._layer().ping()

    # ------------------------------------------------------------------ serialization

    def serialize(self, message: dict) -> bytes:
        return msgpack.packb(message, use_bin_type=True)

    def deserialize(self, data: bytes) -> dict:
        return msgpack.unpackb(data, raw=False)


class _LoopLayer:
    """The clients, channels and groups of one event loop."""

    def __init__(self, owner: KafkaChannelLayer, loop: asyncio.AbstractEventLoop):
        self.owner = owner
        self.loop = loop
        self.process = uuid.uuid4().hex[:16]
        # channel name -> queue of (expires_at, message); group -> local channel names
        self.channels: dict[str, asyncio.Queue] = {}
        self.groups: dict[str, set[str]] = {}
        # partition -> how many local groups (and the inbox) need it read, and its assignment
        self.readers: Counter[int] = Counter()
        self.assigning: dict[int, asyncio.Future] = {}
        self.joining: dict[str, asyncio.Future] = {}  # group -> reading its partition
        self.partitions = owner.partitions
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.broker_lost = False
        self.outage_logged = False
        self.reachable_since = 0.0
        self.last_probe = 0.0
        self.started: asyncio.Future | None = None

    # ------------------------------------------------------------------ connection handling

    async def _ensure_started(self) -> None:
        if self.started is None:
            self.started = self.loop.create_future()
            try:
                await self.loop.run_in_executor(None, self._connect)
                self.thread = threading.Thread(
                    target=self._poll_forever, name=f"kafka-layer-{self.process}", daemon=True
                )
                self.thread.start()
                await self._read(partition_for(self.process, self.partitions))
            except BaseException as error:
                self.started.set_exception(error)
                self.started.exception()  # retrieved: the awaiting caller gets it
                self.started = None
                raise
            self.started.set_result(None)
        await asyncio.shield(self.started)

    def _connect(self) -> None:
        """Create the topic if needed, learn its partition count, and make the clients."""
        common = {
            "bootstrap.servers": self.owner.bootstrap_servers,
            "client.id": f"teamtrack-{self.process}",
            "error_cb": self._on_error,
            "reconnect.backoff.max.ms": 1000,
            # Only _ensure_topic creates the topic: a broker's auto-created one would have its
            # default partition count, and every process must hash by the same count.
            "allow.auto.create.topics": False,
            # librdkafka would print every failed reconnect to stderr; error_cb reports outages.
            "log_level": 2,
        }
        self._ensure_topic()
        self.producer = Producer(
            {
                **common,
                # At most once, low latency: the live feed is latest-wins.
                "enable.idempotence": False,
                "acks": 1,
                "retries": 0,
                "linger.ms": 2,
                "message.timeout.ms": 3000,
                "queue.buffering.max.messages": 100_000,
                **self.owner.producer_config,
                # Last, so that no KAFKA_PRODUCER_CONFIG can take them away: group_send_many
                # waits for every record's report of the broker's acknowledgement.
                "delivery.report.only.error": False,
                "on_delivery": self._on_delivery,
            }
        )
        self.consumer = Consumer(
            {
                **common,
                # Required by the client, never joined: partitions are assigned by hand.
                "group.id": f"teamtrack-{self.process}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 10,
                "fetch.error.backoff.ms": 50,
                **self.owner.consumer_config,
            }
        )

    def _ensure_topic(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.owner.bootstrap_servers})
        metadata = admin.list_topics(timeout=BROKER_TIMEOUT)
        if self.owner.topic not in metadata.topics:
            new_topic = NewTopic(
                self.owner.topic,
                num_partitions=self.owner.partitions,
                replication_factor=self.owner.replication_factor,
            )
            future = admin.create_topics([new_topic])[self.owner.topic]
            try:
                future.result(BROKER_TIMEOUT)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            metadata = admin.list_topics(self.owner.topic, timeout=BROKER_TIMEOUT)
        # Every process hashes by the topic's real partition count, whatever it was created with.
        partitions = len(metadata.topics[self.owner.topic].partitions)
        if partitions != self.owner.partitions:
            logger.warning(
                "Kafka topic %s has %d partitions, not %d; using %d",
                self.owner.topic, partitions, self.owner.partitions, partitions,
            )  # fmt: skip
        self.partitions = partitions or self.partitions

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.broker_lost = True
            if not self.outage_logged:
                self.outage_logged = True
                logger.error("Kafka broker lost (%s); the layer keeps retrying", error.str())
        elif error.code() == KafkaError._TRANSPORT:
            # One connection failing; librdkafka reconnects, and reports all brokers down if so.
            logger.debug("Kafka connection error: %s", error.str())
        else:
            logger.warning("Kafka client error: %s", error.str())

    def _on_delivery(self, error, record) -> None:
        if error is not None:
            self.owner.metrics["delivery_failed"] += 1

    async def ping(self) -> None:
        """Ask the broker for metadata through our producer's connection."""
        await self._ensure_started()
        await self.loop.run_in_executor(None, lambda: self.producer.list_topics(timeout=2))

    async def close(self) -> None:
        """Stop the polling thread (it closes the clients) and forget every channel."""
        self.stopping.set()
        if self.thread is not None:
            await self.loop.run_in_executor(None, self.thread.join)
        for channel_queue in self.channels.values():
            # Wake receivers; they find their channel gone. A full queue has none waiting.
            with contextlib.suppress(asyncio.QueueFull):
                channel_queue.put_nowait(None)
        self.channels.clear()
        self.groups.clear()

    # ------------------------------------------------------------------ the polling thread

    def _poll_forever(self) -> None:
        """Serve assignment commands, read records, and hand them to the event loop."""
        try:
            while not self.stopping.is_set() and not self.loop.is_closed():
                try:
                    self._poll_once()
                except RuntimeError:
                    if self.loop.is_closed():
                        return  # the event loop closed under us: nothing left to deliver to
                    logger.exception("Kafka layer polling failed; going on")
                    time.sleep(POLL_TIMEOUT)
                except Exception:
                    logger.exception("Kafka layer polling failed; going on")
                    time.sleep(POLL_TIMEOUT)
        finally:
            with contextlib.suppress(Exception):
                self.consumer.close()
            with contextlib.suppress(Exception):
                self.producer.flush(0)

    def _poll_once(self) -> None:
        self._serve_commands()
        # poll() returns with the first record; consume() then takes what else is there.
        first = self.consumer.poll(POLL_TIMEOUT)
        records = [first, *self.consumer.consume(999, timeout=0)] if first else []
        self.producer.poll(0)
        if records:
            self.loop.call_soon_threadsafe(self._deliver, records)
        now = time.monotonic()
        if self.broker_lost and now - self.last_probe > PROBE_INTERVAL:
            self.last_probe = now
            self._probe_broker()
        elif (
            self.outage_logged
            and not self.broker_lost
            and now - self.reachable_since > STABLE_AFTER
        ):
            self.outage_logged = False
            logger.warning("Kafka broker reachable again")

    def _serve_commands(self) -> None:
        while True:
            try:
                command, partition, future = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                if command == "read":
                    part = TopicPartition(self.owner.topic, partition)
                    _, high = self.consumer.get_watermark_offsets(
                        part, timeout=BROKER_TIMEOUT, cached=False
                    )
                    # From the end of the log as it is now: whatever is sent after this returns
                    # is read, nothing older is.
                    self.consumer.incremental_assign(
                        [TopicPartition(self.owner.topic, partition, high)]
                    )
                else:
                    self.consumer.incremental_unassign(
                        [TopicPartition(self.owner.topic, partition)]
                    )
                result = (future.set_result, None)
            except Exception as error:
                result = (future.set_exception, error)
            self.loop.call_soon_threadsafe(_settle, future, *result)

    def _probe_broker(self) -> None:
        """While the broker is lost, ask for metadata through both of our own clients; when
        both get answers, make sure of the topic (a broker may come back without it)."""
        try:
            for client in (self.producer, self.consumer):
                client.list_topics(timeout=1)  # no topic named: asking must not create it
            self._ensure_topic()
        except Exception:
            return
        self.broker_lost = False
        self.reachable_since = time.monotonic()

    # ------------------------------------------------------------------ delivery (event loop)

    def _deliver(self, records) -> None:
        now = time.time()
        for record in records:
            if record.error() is not None:
                if record.error().code() != KafkaError._PARTITION_EOF:
                    logger.warning("Kafka read error: %s", record.error().str())
                continue
            # Read against wanted: how well reading by interest works (loadtest.kafka_interest).
            size = len(record.value() or b"")
            self.owner.metrics["read_bytes"] += size
            kind, name = parse_record_key(record.key())
            if kind == GROUP_KEY:
                members = self.groups.get(name)
                if not members:
                    continue  # another group that hashes to a partition we read
                self.owner.metrics["wanted_bytes"] += size
                message = self.owner.deserialize(record.value())
                for channel in members:
                    if not self._enqueue(channel, dict(message), now):
                        self.owner.metrics["group_receive_dropped"] += 1
            elif name in self.channels:
                self.owner.metrics["wanted_bytes"] += size
                if not self._enqueue(name, self.owner.deserialize(record.value()), now):
                    self.owner.metrics["receive_dropped"] += 1

    def _enqueue(self, channel: str, message: dict, now: float) -> bool:
        """Queue a message for a local channel; return False if the channel is gone or full."""
        channel_queue = self.channels.get(channel)
        if channel_queue is None or channel_queue.full():
            return False
        channel_queue.put_nowait((now + self.owner.expiry, message))
        return True

    # ------------------------------------------------------------------ channels

    def _queue(self, channel: str) -> asyncio.Queue:
        channel_queue = self.channels.get(channel)
        if channel_queue is None:
            channel_queue = asyncio.Queue(maxsize=self.owner.get_capacity(channel))
            self.channels[channel] = channel_queue
        return channel_queue

    def _is_local(self, channel: str) -> bool:
        return "!" in channel and inbox_of(channel) == self.process

    async def new_channel(self, prefix: str) -> str:
        await self._ensure_started()
        channel = f"{prefix}.{self.process}!{uuid.uuid4().hex}"
        self._queue(channel)
        return channel

    async def send(self, channel: str, message: dict) -> None:
        if self._is_local(channel):
            if not self._enqueue(channel, message, time.time()):
                raise ChannelFull(channel)
            return
        await self._ensure_started()
        inbox = inbox_of(channel) if "!" in channel else channel
        try:
            self._produce(record_key(CHANNEL_KEY, channel), inbox, message)
        except BufferError:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict:
        if "!" not in channel and channel not in self.channels:
            # A plain channel name: every process that receives on it reads its partition.
            await self._ensure_started()
            self._queue(channel)
            await self._read(partition_for(channel, self.partitions))
        channel_queue = self._queue(channel)
        while True:
            item = await channel_queue.get()
            if item is None:
                raise asyncio.CancelledError("the layer was flushed")
            expires_at, message = item
            if expires_at >= time.time():
                return message

    # ------------------------------------------------------------------ groups

    async def group_add(self, group: str, channel: str) -> None:
        if not self._is_local(channel) and channel not in self.channels:
            raise RuntimeError("group_add() takes channels of this process (from new_channel())")
        await self._ensure_started()
        joining = self.joining.get(group)
        if group not in self.groups:
            # Made before any await, so that channels added at once share one read of the
            # partition, and every one of them returns only once it is read.
            self.groups[group] = set()
            joining = self.joining[group] = asyncio.ensure_future(
                self._read(partition_for(group, self.partitions))
            )
        try:
            await asyncio.shield(joining)
        except BaseException:
            if joining.done() and self.joining.get(group) is joining:
                del self.joining[group]
                if not self.groups.get(group):
                    self.groups.pop(group, None)
            raise
        self.groups[group].add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is None or channel not in members:
            return
        members.discard(channel)
        if not members:
            del self.groups[group]
            self.joining.pop(group, None)
            await self._unread(partition_for(group, self.partitions))

    async def group_send(self, group: str, message: dict) -> None:
        await self._ensure_started()
        try:
            self._produce(record_key(GROUP_KEY, group), group, message)
        except BufferError:
            self.owner.metrics["group_send_dropped"] += 1

    async def group_send_confirmed(self, messages: list[tuple[str, dict]]) -> None:
        await self._ensure_started()
        written = []
        for group, message in messages:
            future = self.loop.create_future()
            written.append(future)
            try:
                self._produce(
                    record_key(GROUP_KEY, group), group, message, on_delivery=self._reporter(future)
                )
            except BufferError:
                self.owner.metrics["group_send_dropped"] += 1
                future.set_exception(ChannelFull(group))
        results = await asyncio.gather(*written, return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise failures[0]

    def _reporter(self, future: asyncio.Future):
        """Return a delivery callback (run on the polling thread) that settles `future`."""

        def report(error, record) -> None:
            if error is None:
                self.loop.call_soon_threadsafe(_settle, future, future.set_result, None)
            else:
                self.owner.metrics["delivery_failed"] += 1
                failure = KafkaException(error)
                self.loop.call_soon_threadsafe(_settle, future, future.set_exception, failure)

        return report

    def _produce(self, key: bytes, partition_name: str, message: dict, **options) -> None:
        self.producer.produce(
            self.owner.topic,
            value=self.owner.serialize(message),
            key=key,
            partition=partition_for(partition_name, self.partitions),
            **options,
        )

    # ------------------------------------------------------------------ partitions

    async def _read(self, partition: int) -> None:
        """Count one more local need for a partition; start reading it if it is new, and return
        once it is read."""
        self.readers[partition] += 1
        assigning = self.assigning.get(partition)
        if assigning is None:
            assigning = self.assigning[partition] = asyncio.ensure_future(
                self._command("read", partition)
            )
        try:
            await asyncio.shield(assigning)
        except BaseException:
            self.readers[partition] -= 1
            if self.readers[partition] <= 0:
                del self.readers[partition]
            if assigning.done() and self.assigning.get(partition) is assigning:
                del self.assigning[partition]  # failed: the next need tries again
            raise

    async def _unread(self, partition: int) -> None:
        self.readers[partition] -= 1
        if self.readers[partition] <= 0:
            del self.readers[partition]
            self.assigning.pop(partition, None)
            await self._command("unread", partition)

    async def _command(self, command: str, partition: int) -> None:
        future = self.loop.create_future()
        self.commands.put((command, partition, future))
        await future

    def read_partitions(self) -> set[int]:
        """Return the partitions this event loop reads (tests and operators)."""
        return set(self.readers)


def _settle(future: asyncio.Future, settle, value) -> None:
    if not future.done():
        settle(value)
