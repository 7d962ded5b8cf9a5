"""A Channels layer over Kafka, built for fan-out by interest.

All traffic goes through one topic. A group's messages are keyed to one partition (a hash of
the group name), and so is each process's inbox of process-specific channels. Each process
reads, by manual assignment and with no consumer group, only its inbox partition and the
partitions of groups it has local members in, and fans group messages out to those members
itself. So a replica that watches no manager of a team reads none of its partitions (unless a
hash collision puts the team beside one it does watch; more partitions, fewer collisions), and
adding a replica adds no broker traffic for teams it does not watch.

Delivery is at most once and tuned for latency: no idempotence, no retries, a small linger and a
short message timeout. `send` and `group_send` never wait for the broker (a full local producer
queue drops and counts); `group_send_many` returns only once the broker acknowledged every
record, through the producer's delivery reports, and raises if one failed: the relay
acknowledges devices on it. Messages to a channel of the same process never leave the process.

What this layer does not do, by design (docs/architecture.md):
- Only process-specific channels (from `new_channel()`) exist: a normal channel name, which the
  spec gives a single reader among all processes, needs a consumer group and is refused.
- A full local channel drops its oldest message on arrival (the feed is latest-wins).
- `flush()` is for tests: it ends every `receive` waiting on this event loop.
- Every process hashes by the partition count it read at start: changing the topic's count
  needs a restart of every replica.

The layer keeps one producer, one consumer and one polling thread per event loop, like
channels_redis keeps connections per loop, and closes them when the loop closes. See
docs/operations.md for broker loss, recovery and the topic's settings.
"""

import asyncio
import contextlib
import logging
import queue
import threading
import time
import uuid
from collections import Counter

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from tracking.layers.kafka_clients import (
    BROKER_TIMEOUT,
    MAX_MESSAGE_BYTES,
    TopicSpec,
    client_configs,
    ensure_topic,
)
from tracking.layers.utils import (
    CHANNEL_KEY,
    FENCE_KEY,
    GROUP_KEY,
    inbox_of,
    parse_record_key,
    partition_for,
    record_key,
)

logger = logging.getLogger(__name__)

POLL_TIMEOUT = 0.02  # seconds the polling thread waits for records before serving commands
PROBE_INTERVAL = 1.0  # seconds between broker probes while the broker is lost
# Seconds the broker must stay reachable before an outage is over: clients reconnecting after a
# restart may report it down once more, and one outage should read as one in the logs.
STABLE_AFTER = 5.0
# Record batches handed to the event loop and not yet delivered: past this the polling thread
# stops reading, so a stalled loop holds at most this many batches of READ_BATCH records.
HANDOVER_BATCHES = 2
READ_BATCH = 1000
FLUSH_TIMEOUT = 3.0  # seconds a closing layer waits for its records to reach the broker


class MessageTooLarge(ValueError):
    """A message bigger than the layer carries (MAX_MESSAGE_BYTES, serialized)."""


class KafkaChannelLayer(BaseChannelLayer):
    """Channel layer over one Kafka topic; groups and process inboxes are partitions."""

    extensions = ["groups", "flush", "group_send_many"]

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "teamtrack-layer",
        partitions: int = 256,
        replication_factor: int = 1,
        retention_ms: int = 300_000,
        segment_ms: int = 60_000,
        fetch_wait_ms: int = 100,
        expiry: int = 60,
        capacity: int = 100,
        channel_capacity=None,
        client_config: dict | None = None,
        producer_config: dict | None = None,
        consumer_config: dict | None = None,
        admin_config: dict | None = None,
    ):
        super().__init__(expiry=expiry, capacity=capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.topic_spec = TopicSpec(topic, partitions, replication_factor, retention_ms, segment_ms)
        self.fetch_wait_ms = fetch_wait_ms
        self.client_config = client_config or {}
        self.producer_config = producer_config or {}
        self.consumer_config = consumer_config or {}
        self.admin_config = admin_config or {}
        # Drops, failures and bytes, for /metrics, tests and loadtest.kafka_interest.
        self.metrics: Counter[str] = Counter()
        self._loop_layers: dict[asyncio.AbstractEventLoop, _LoopLayer] = {}

    def _layer(self) -> "_LoopLayer":
        loop = asyncio.get_running_loop()
        layer = self._loop_layers.get(loop)
        if layer is None:
            if loop not in self._loop_layers:
                _close_with_loop(self, loop)
            layer = self._loop_layers[loop] = _LoopLayer(self, loop)
        return layer

    # ------------------------------------------------------------------ channel layer API

    async def send(self, channel: str, message: dict) -> None:
        """Send a message to a channel; raise ChannelFull if it cannot take more."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        _require_process_specific(channel)
        await self._layer().send(channel, message)

    async def receive(self, channel: str) -> dict:
        """Receive the next message on a channel of this process, waiting for one."""
        self.require_valid_channel_name(channel)
        _require_process_specific(channel)
        return await self._layer().receive(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new process-specific channel name that this process receives on."""
        return await self._layer().new_channel(prefix)

    # ------------------------------------------------------------------ groups extension

    async def group_add(self, group: str, channel: str) -> None:
        """Add a channel of this process to a group; return once it gets what is sent next."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._layer().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove a channel from a group; stop reading its partition when nothing needs it."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._layer().group_discard(group, channel)

    async def group_send(self, group: str, message: dict) -> None:
        """Send a message to every member of a group, in every process, without waiting; drop
        it (and count) if the producer is full; raise MessageTooLarge past the size limit."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        await self._layer().group_send(group, message)

    # ------------------------------------------------------------------ group_send_many extension

    async def group_send_many(self, messages: list[tuple[str, dict]]) -> None:
        """Send each (group, message) pair, batched by the producer; return once the broker
        acknowledged them all, or raise (KafkaException, ChannelFull) if one was not written."""
        for group in {group for group, _ in messages}:
            self.require_valid_group_name(group)
        await self._layer().group_send_confirmed(messages)

    # ------------------------------------------------------------------ flush extension

    async def flush(self) -> None:
        """Forget every channel and group of this event loop and close its clients."""
        loop = asyncio.get_running_loop()
        layer = self._loop_layers.get(loop)
        if layer is not None:
            self._loop_layers[loop] = None  # still hooked to the loop's close
            await layer.close()

    # ------------------------------------------------------------------ health

    async def ping(self) -> None:
        """Raise if the broker does not answer a metadata request."""
        await self._layer().ping()

    # ------------------------------------------------------------------ serialization

    def serialize(self, message: dict) -> bytes:
        data = msgpack.packb(message, use_bin_type=True)
        if len(data) > MAX_MESSAGE_BYTES:
            self.metrics["too_large"] += 1
            raise MessageTooLarge(
                f"message of {len(data)} bytes; the Kafka layer carries at most {MAX_MESSAGE_BYTES}"
            )
        return data

    def deserialize(self, data: bytes) -> dict:
        # strict_map_key=False: msgpack packs maps with int keys, so it must read them too.
        return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _require_process_specific(channel: str) -> None:
    if "!" not in channel:
        raise TypeError(
            f"{channel!r} is a normal channel: the Kafka layer carries process-specific"
            " channels only (names from new_channel()), see docs/architecture.md"
        )


def _close_with_loop(owner: KafkaChannelLayer, loop: asyncio.AbstractEventLoop) -> None:
    """Close the loop's clients when the loop closes, as channels_redis does: async_to_sync
    makes a loop per call in a thread without one, and each would keep a client set."""
    original_close = loop.close

    def close(*args, **kwargs):
        layer = owner._loop_layers.pop(loop, None)
        if layer is not None:
            layer.stop()
        return original_close(*args, **kwargs)

    loop.close = close


class _LoopLayer:
    """The clients, channels and groups of one event loop."""

    def __init__(self, owner: KafkaChannelLayer, loop: asyncio.AbstractEventLoop):
        self.owner = owner
        self.loop = loop
        self.process = uuid.uuid4().hex[:16]
        # channel name -> queue of (expires_at, message)
        self.channels: dict[str, asyncio.Queue] = {}
        # group -> its local channels, each with the first offset it receives (see group_add)
        self.groups: dict[str, dict[str, int]] = {}
        # partition -> how many local groups (and the inbox) need it read; what is assigned
        self.readers: Counter[int] = Counter()
        self.assigned: set[int] = set()
        self.topic_id = ""
        self.last_offsets: dict[int, int] = {}  # partition -> offset of the last record read
        self.locks: dict[object, list] = {}  # group or partition -> [lock, users]
        self.background: set[asyncio.Task] = set()
        self.partitions = owner.topic_spec.partitions
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        self.handover = threading.BoundedSemaphore(HANDOVER_BATCHES)
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
            # A task of its own: a caller that gives up (a probe's timeout) cancels neither the
            # start nor the other callers, and no second start runs beside it.
            self.started = asyncio.ensure_future(self._start())
            self.started.add_done_callback(_retrieve)
        await asyncio.shield(self.started)

    async def _start(self) -> None:
        try:
            await self.loop.run_in_executor(None, self._connect)
        except BaseException:
            self.started = None  # the next caller tries again
            raise
        if self.stopping.is_set():  # flushed meanwhile: this loop layer is done for
            await self.loop.run_in_executor(None, self._close_clients)
            raise RuntimeError("the Kafka layer was closed while it started")
        # Started only once everything else is: a failed start leaves no thread behind.
        self.thread = threading.Thread(
            target=self._poll_forever, name=f"kafka-layer-{self.process}", daemon=True
        )
        self.thread.start()

    def _connect(self) -> None:
        """Make sure of the topic, make the clients and read the inbox; on failure close what
        was made, so that the next attempt starts clean."""
        configs = client_configs(
            bootstrap_servers=self.owner.bootstrap_servers,
            client_id=f"teamtrack-{self.process}",
            common=self.owner.client_config,
            producer=self.owner.producer_config,
            consumer=self.owner.consumer_config,
            admin=self.owner.admin_config,
            fetch_wait_ms=self.owner.fetch_wait_ms,
            error_cb=self._on_error,
            on_delivery=self._on_delivery,
        )
        self.admin_config = configs.admin
        topic = ensure_topic(configs.admin, self.owner.topic_spec)
        self.partitions, self.topic_id = topic.partitions, topic.topic_id
        producer = consumer = None
        try:
            producer = Producer(configs.producer)
            consumer = Consumer(configs.consumer)
            inbox = partition_for(self.process, self.partitions)
            consumer.incremental_assign([self._from(consumer, inbox, None)])
        except BaseException:
            if consumer is not None:
                consumer.close()
            raise
        self.producer, self.consumer = producer, consumer
        self.readers[inbox] += 1
        self.assigned.add(inbox)

    def _from(self, consumer: Consumer, partition: int, start: int | None) -> TopicPartition:
        """Where to start reading a partition: `start`, or the end of the log as it is now."""
        if start is None:
            part = TopicPartition(self.owner.topic, partition)
            _, start = consumer.get_watermark_offsets(part, timeout=BROKER_TIMEOUT, cached=False)
        return TopicPartition(self.owner.topic, partition, start)

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
        """Report a record `send` or `group_send` handed over and the broker never took: nobody
        waits for it, so it is logged here (group_send_many's failures go to its caller)."""
        if error is not None:
            logger.warning(
                "Kafka layer: a record for %s was not written: %s",
                (record.key() or b"").decode(errors="replace"), error.str(),
            )  # fmt: skip
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody counts any more
                self.loop.call_soon_threadsafe(self._count, "delivery_failed")

    def _count(self, name: str) -> None:
        """Count on the event loop's thread: /metrics reads the counters from another."""
        self.owner.metrics[name] += 1

    async def ping(self) -> None:
        """Ask the broker for metadata through our producer's connection."""
        await self._ensure_started()
        await self.loop.run_in_executor(None, lambda: self.producer.list_topics(timeout=2))

    async def close(self) -> None:
        """Stop the polling thread (it closes the clients) and end every waiting receive."""
        await self.loop.run_in_executor(None, self.stop)
        for channel_queue in self.channels.values():
            # Wake receivers; they find their channel gone. A full queue has none waiting.
            with contextlib.suppress(asyncio.QueueFull):
                channel_queue.put_nowait(None)
        self.channels.clear()
        self.groups.clear()

    def stop(self) -> None:
        """Stop the polling thread and wait for it: it sends what is queued, then closes."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()

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
            self._close_clients()

    def _close_clients(self) -> None:
        """Send what is queued (for FLUSH_TIMEOUT), fail what is not, and close both clients."""
        with contextlib.suppress(Exception):
            self.consumer.close()
        with contextlib.suppress(Exception):
            unsent = self.producer.flush(FLUSH_TIMEOUT)
            if unsent:
                logger.warning("Kafka layer closed with %d records the broker never took", unsent)
                self.producer.purge()
                self.producer.flush(1)  # their delivery reports fail whoever waits for them
        while True:  # commands that came too late: their callers must not wait for ever
            try:
                *_, future = self.commands.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                failure = RuntimeError("the Kafka layer was closed")
                self.loop.call_soon_threadsafe(_settle, future, future.set_exception, failure)
        # The clients hold our callbacks and we hold them: let go, so that they (and
        # librdkafka's threads and connections) go now rather than at a garbage collection.
        self.producer = self.consumer = None

    def _poll_once(self) -> None:
        self._serve_commands()
        self.producer.poll(0)
        self._watch_broker()
        # Backpressure: while the event loop has not taken the last batches, read nothing more;
        # librdkafka then holds (and bounds) what the broker sends.
        if not self.handover.acquire(timeout=POLL_TIMEOUT):
            return
        try:
            # poll() returns with the first record; consume() then takes what else is there.
            first = self.consumer.poll(POLL_TIMEOUT)
            records = [first, *self.consumer.consume(READ_BATCH - 1, timeout=0)] if first else []
            if records:
                self.loop.call_soon_threadsafe(self._deliver, records)
                return  # _deliver releases the hand-over
        except BaseException:
            self.handover.release()
            raise
        self.handover.release()

    def _watch_broker(self) -> None:
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
                command, partition, start, future = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                if command == "read":
                    self.consumer.incremental_assign([self._from(self.consumer, partition, start)])
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
            topic = ensure_topic(self.admin_config, self.owner.topic_spec)
            if topic.topic_id != self.topic_id:
                self._read_the_new_topic()
                self.topic_id = topic.topic_id
        except Exception:
            return
        if topic.partitions != self.partitions:
            logger.warning(
                "Kafka topic %s now has %d partitions; this process hashes by %d until it"
                " restarts (docs/operations.md)",
                self.owner.topic, topic.partitions, self.partitions,
            )  # fmt: skip
        self.broker_lost = False
        self.reachable_since = time.monotonic()

    def _read_the_new_topic(self) -> None:
        """The broker came back with the topic made anew (a broker that lost it): its logs
        start again at 0, below where we read and where members joined. Read every partition
        from its start, and let every member receive from there."""
        logger.warning("Kafka topic %s was made anew; reading it from its start", self.owner.topic)
        for assigned in self.consumer.assignment():
            self.consumer.seek(TopicPartition(self.owner.topic, assigned.partition, 0))
        self.loop.call_soon_threadsafe(self._forget_offsets)

    def _forget_offsets(self) -> None:
        self.last_offsets.clear()
        for members in self.groups.values():
            for channel in members:
                members[channel] = 0

    # ------------------------------------------------------------------ delivery (event loop)

    def _deliver(self, records) -> None:
        try:
            self._deliver_records(records)
        finally:
            self.handover.release()

    def _deliver_records(self, records) -> None:
        now = time.time()
        for record in records:
            if record.error() is not None:
                if record.error().code() != KafkaError._PARTITION_EOF:
                    logger.warning("Kafka read error: %s", record.error().str())
                continue
            try:
                self._deliver_record(record, now)
            except Exception:
                # One record we cannot read must not cost the others of its batch.
                self.owner.metrics["bad_records"] += 1
                logger.exception(
                    "Kafka layer: skipped a record it cannot read (partition %d, offset %d)",
                    record.partition(), record.offset(),
                )  # fmt: skip

    def _deliver_record(self, record, now: float) -> None:
        partition, offset = record.partition(), record.offset()
        if offset < self.last_offsets.get(partition, -1):
            self._log_restarted(partition, offset)
        self.last_offsets[partition] = offset
        # Read against wanted: how well reading by interest works (loadtest.kafka_interest).
        size = len(record.value() or b"")
        self.owner.metrics["read_bytes"] += size
        kind, name = parse_record_key(record.key())
        if kind == GROUP_KEY:
            members = self.groups.get(name)
            if not members:
                return  # another group that hashes to a partition we read
            self.owner.metrics["wanted_bytes"] += size
            message = self.owner.deserialize(record.value())
            for channel, since in members.items():
                if offset >= since:  # never a record sent before the member joined
                    self._arrive(channel, dict(message), now, "group_receive_dropped")
        elif kind == CHANNEL_KEY and name in self.channels:
            self.owner.metrics["wanted_bytes"] += size
            self._arrive(name, self.owner.deserialize(record.value()), now, "receive_dropped")

    def _log_restarted(self, partition: int, offset: int) -> None:
        """Offsets went back: the topic was made again (a broker that lost it) or its log cut
        back (a leader lost). Members start from here, or would never receive again."""
        logger.warning(
            "Kafka topic %s partition %d restarted at offset %d; reading on from there",
            self.owner.topic, partition, offset,
        )  # fmt: skip
        for group, members in self.groups.items():
            if partition_for(group, self.partitions) == partition:
                for channel, since in members.items():
                    members[channel] = min(since, offset)

    def _arrive(self, channel: str, message: dict, now: float, drop_metric: str) -> None:
        """Queue an arriving message; a full channel drops its oldest (latest-wins)."""
        channel_queue = self.channels.get(channel)
        if channel_queue is None:
            return
        if channel_queue.full():
            channel_queue.get_nowait()
            self.owner.metrics[drop_metric] += 1
        channel_queue.put_nowait((now + self.owner.expiry, message))

    # ------------------------------------------------------------------ channels

    def _queue(self, channel: str) -> asyncio.Queue:
        channel_queue = self.channels.get(channel)
        if channel_queue is None:
            channel_queue = asyncio.Queue(maxsize=self.owner.get_capacity(channel))
            self.channels[channel] = channel_queue
        return channel_queue

    def _is_local(self, channel: str) -> bool:
        return inbox_of(channel) == self.process

    async def new_channel(self, prefix: str) -> str:
        await self._ensure_started()
        channel = f"{prefix}.{self.process}!{uuid.uuid4().hex}"
        self._queue(channel)
        return channel

    async def send(self, channel: str, message: dict) -> None:
        if self._is_local(channel):
            channel_queue = self.channels.get(channel)
            if channel_queue is None:
                return  # its receiver left (or it never was): nobody would read it
            if channel_queue.full():
                raise ChannelFull(channel)
            channel_queue.put_nowait((time.time() + self.owner.expiry, message))
            return
        await self._ensure_started()
        try:
            self._produce(record_key(CHANNEL_KEY, channel), inbox_of(channel), message)
        except BufferError:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict:
        channel_queue = self._queue(channel)
        while True:
            try:
                item = await channel_queue.get()
            except asyncio.CancelledError:
                # As channels_redis assumes: a cancelled receive is its consumer leaving, and
                # nothing else would ever remove the channel.
                if self.channels.get(channel) is channel_queue:
                    del self.channels[channel]
                raise
            if item is None:
                raise asyncio.CancelledError("the layer was flushed")
            expires_at, message = item
            if expires_at >= time.time():
                return message

    # ------------------------------------------------------------------ groups

    async def group_add(self, group: str, channel: str) -> None:
        if not self._is_local(channel):
            raise RuntimeError("group_add() takes channels of this process (from new_channel())")
        await self._ensure_started()
        partition = partition_for(group, self.partitions)
        async with self._serialised(("group", group)):
            members = self.groups.get(group)
            if members is not None and channel in members:
                return
            # A fence record marks where the member starts: everything at or after its offset
            # was written after this call began, everything before it is not delivered to it.
            since = await self._fence(group, partition)
            if members is None:
                await self._read(partition, since)
                members = self.groups.setdefault(group, {})
            members[channel] = since

    async def group_discard(self, group: str, channel: str) -> None:
        async with self._serialised(("group", group)):
            members = self.groups.get(group)
            if members is None or channel not in members:
                return
            del members[channel]
            if not members:
                del self.groups[group]
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
        for group, message in messages:  # every one is tried: one failure spares the others
            future = self.loop.create_future()
            written.append(future)
            try:
                self._produce(
                    record_key(GROUP_KEY, group), group, message, on_delivery=self._reporter(future)
                )
            except BufferError:
                self.owner.metrics["group_send_dropped"] += 1
                future.set_exception(ChannelFull(group))
            except MessageTooLarge as error:
                future.set_exception(error)
        results = await asyncio.gather(*written, return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise failures[0]

    async def _fence(self, group: str, partition: int) -> int:
        """Write an empty fence record to the partition; return its offset once written."""
        future = self.loop.create_future()
        try:
            self.producer.produce(
                self.owner.topic,
                value=b"",
                key=record_key(FENCE_KEY, group),
                partition=partition,
                on_delivery=self._reporter(future),
            )
        except BufferError:
            raise ChannelFull(group) from None
        return await future

    def _reporter(self, future: asyncio.Future):
        """Return a delivery callback (run on the polling thread) that settles `future` with
        the record's offset."""

        def report(error, record) -> None:
            if error is None:
                self.loop.call_soon_threadsafe(_settle, future, future.set_result, record.offset())
            else:
                self.loop.call_soon_threadsafe(self._count, "delivery_failed")
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

    async def _read(self, partition: int, start: int | None = None) -> None:
        """Count one more local need for a partition, and return once it is read (from `start`
        if this assigns it)."""
        self.readers[partition] += 1
        try:
            await asyncio.shield(self._sync(partition, start))
        except BaseException:
            self._release(partition)
            raise

    async def _unread(self, partition: int) -> None:
        self._release(partition)
        await asyncio.shield(self._sync(partition))

    def _release(self, partition: int) -> None:
        self.readers[partition] -= 1
        if self.readers[partition] <= 0:
            del self.readers[partition]
            # A cancelled or failed read may have assigned it meanwhile: bring the two in line.
            task = asyncio.ensure_future(self._sync(partition))
            self.background.add(task)
            task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("Kafka layer: cannot stop reading a partition: %s", task.exception())

    async def _sync(self, partition: int, start: int | None = None) -> None:
        """Assign or unassign the partition so that it is read exactly while it is needed; one
        change at a time per partition."""
        async with self._serialised(("partition", partition)):
            needed = self.readers.get(partition, 0) > 0
            if needed and partition not in self.assigned:
                await self._command("read", partition, start)
                self.assigned.add(partition)
                # Read again from a fence that may lie below what was read before it left.
                self.last_offsets.pop(partition, None)
            elif not needed and partition in self.assigned:
                await self._command("unread", partition)
                self.assigned.discard(partition)

    async def _command(self, command: str, partition: int, start: int | None = None) -> None:
        if self.stopping.is_set():
            raise RuntimeError("the Kafka layer was closed")
        future = self.loop.create_future()
        self.commands.put((command, partition, start, future))
        await future

    @contextlib.asynccontextmanager
    async def _serialised(self, key):
        """Hold the lock of a group or partition; forget the lock when nobody holds it."""
        entry = self.locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self.locks[key]

    def read_partitions(self) -> set[int]:
        """Return the partitions this event loop reads (tests and operators)."""
        return set(self.assigned)


def _retrieve(task: asyncio.Task) -> None:
    """Mark a task's failure as seen: its callers may all have given up waiting."""
    if not task.cancelled():
        task.exception()


def _settle(future: asyncio.Future, settle, value) -> None:
    if not future.done():
        settle(value)
