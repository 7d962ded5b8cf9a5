"""Failures of what the relay depends on (its channel layer, its shared state): each logged once
per outage, and its end once. The channel layer and the state fail apart (a Kafka broker lost
while Redis answers), so each has an Outage of its own."""

import logging
import sys
import time

from tracking import metrics

logger = logging.getLogger("tracking.relay")


class Outage:
    """Whether the relay is failing to reach one thing it depends on."""

    # A dependency that flaps (a restarted Redis drops a connection made as it started) logs its
    # traceback once in this many seconds; the outages after it get a line each.
    TRACEBACK_INTERVAL = 60.0

    def __init__(self, what: str, clock=time.monotonic):
        self.what = what  # "channel layer" or "state", in the log
        self.failing = False
        self.on_recovery = None  # called once when an outage ends
        self.clock = clock
        self.traceback_logged_at = -self.TRACEBACK_INTERVAL

    async def guard(self, operation):
        """Await an operation; on failure report it and return None."""
        try:
            result = await operation
        except Exception as error:
            metrics.RELAY_ERRORS.inc()
            self.failed(error)
            return None
        self.recovered()
        return result

    def failed(self, error: BaseException | None = None) -> None:
        """Report a failure (`error`, or the exception being handled), once per outage."""
        if self.failing:
            return
        self.failing = True
        now = self.clock()
        if now - self.traceback_logged_at >= self.TRACEBACK_INTERVAL:
            self.traceback_logged_at = now
            logger.error("Relay lost its %s; retrying quietly", self.what, exc_info=error or True)
        else:
            logger.error(
                "Relay lost its %s again (%r); retrying quietly",
                self.what,
                error or sys.exc_info()[1],
            )

    def recovered(self) -> None:
        if self.failing:
            self.failing = False
            logger.warning("Relay reaches its %s again", self.what)
            if self.on_recovery is not None:
                self.on_recovery()
