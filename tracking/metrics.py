"""Prometheus metrics of one replica, and the /metrics view that serves them.

Every replica counts for itself (one daphne process each): Prometheus scrapes each replica
directly on the internal network. The view answers only clients from METRICS_ALLOWED_NETWORKS,
and nginx answers 404 for /metrics, so the public never sees them (docs/operations.md).
"""

import ipaddress

from channels.layers import get_channel_layer
from django.conf import settings
from django.http import Http404, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

OPEN_SOCKETS = Gauge("teamtrack_open_sockets", "WebSockets open on this replica, by kind", ["kind"])
# At 0 from the start: the autoscaler's average (deploy/k8s/base/hpa.yaml) must count a new pod.
for _kind in ("worker", "manager"):
    OPEN_SOCKETS.labels(_kind)
POSITIONS_ACCEPTED = Counter(
    "teamtrack_positions_accepted", "Device positions taken for the live feed"
)
POSITIONS_REJECTED = Counter(
    "teamtrack_positions_rejected",
    "Device frames refused (reason: an error code of docs/protocol.md, rate_limited) or "
    "positions ignored as duplicates",
    ["reason"],
)
FRAMES_SENT = Counter("teamtrack_frames_sent", "Frames sent to clients, by frame type", ["type"])
BYTES_SENT = Counter(
    "teamtrack_bytes_sent", "Characters of frames sent to clients, by frame type", ["type"]
)
RELAY_FLUSH_SECONDS = Histogram(
    "teamtrack_relay_flush_seconds",
    "Time the relay took, per window, to publish (stage=publish) or deliver (stage=deliver)",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
LAYER_PUBLISH_ERRORS = Counter(
    "teamtrack_layer_publish_errors",
    "Hand-offs whose positions the channel layer or the shared state did not take (kept, "
    "unacknowledged, and handed on again at the next tick)",
)
RELAY_ERRORS = Counter(
    "teamtrack_relay_errors", "Failed operations on the channel layer or the shared state"
)
SLOW_MANAGER_DISCONNECTS = Counter(
    "teamtrack_slow_manager_disconnects", "Manager sockets closed for not reading (4408)"
)
HELD_FRAMES = Counter(
    "teamtrack_held_frames", "Frames conflated for a manager socket whose buffer was full"
)
RATE_LIMITED_CLOSES = Counter(
    "teamtrack_rate_limited_closes", "Device sockets closed with 4429", ["reason"]
)
HISTORY_STORED = Counter(
    "teamtrack_history_stored", "Positions committed to the history (resends included)"
)
HISTORY_PENDING = Gauge(
    "teamtrack_history_pending", "Positions waiting for the history writer's next insert"
)
HISTORY_WRITE_SECONDS = Histogram(
    "teamtrack_history_write_seconds",
    "Time of one history insert (every team's positions of a window, or more after a failure)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
HISTORY_WRITE_ERRORS = Counter(
    "teamtrack_history_write_errors",
    "History inserts the database refused (their frames kept, unacknowledged, and tried again)",
)
HISTORY_REFUSED_FRAMES = Counter(
    "teamtrack_history_refused_frames",
    "Frames left unacknowledged because HISTORY_MAX_PENDING positions already waited to be "
    "stored (their devices send them again)",
)


def frame_sent(frame_type: str, text: str, count: int = 1) -> None:
    FRAMES_SENT.labels(frame_type).inc(count)
    BYTES_SENT.labels(frame_type).inc(len(text) * count)


class LayerDropsCollector:
    """Reports the channel layer's own counters of dropped messages (our Kafka layer keeps them)."""

    def describe(self):
        return []  # no layer at registration time: it would be built outside any event loop

    def collect(self):
        family = CounterMetricFamily(
            "teamtrack_layer_dropped",
            "Messages the channel layer dropped, by where",
            labels=["where"],
        )
        # vars(), not getattr(): channels-redis' pub/sub layer answers unknown attributes from
        # a per-event-loop layer, which a scrape (in a thread) does not have.
        failures = CounterMetricFamily(
            "teamtrack_layer_failed",
            "Records the broker never took, messages too large, records that could not be read",
            labels=["what"],
        )
        read = CounterMetricFamily(
            "teamtrack_layer_read_bytes",
            "Bytes the Kafka layer read, all and those of groups and channels it has here",
            labels=["which"],
        )
        layer_metrics = dict(vars(get_channel_layer()).get("metrics") or {})
        for name, value in sorted(layer_metrics.items()):
            if name.endswith("dropped"):
                family.add_metric([name], value)
            elif name in ("delivery_failed", "too_large", "bad_records"):
                failures.add_metric([name], value)
            elif name in ("read_bytes", "wanted_bytes"):
                read.add_metric([name.removesuffix("_bytes")], value)
        yield from (family, failures, read)


REGISTRY.register(LayerDropsCollector())


def from_internal_network(address: str | None) -> bool:
    """Whether a client is on METRICS_ALLOWED_NETWORKS (monitoring, probes, the proxy's hosts)."""
    try:
        client = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(
        client in ipaddress.ip_network(network) for network in settings.METRICS_ALLOWED_NETWORKS
    )


def metrics(request):
    """Serve this replica's metrics in Prometheus' text format, to allowed networks only."""
    if not from_internal_network(request.META.get("REMOTE_ADDR")):
        raise Http404  # not 403: the public need not learn that the page exists
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
