"""Failures of what the relay depends on (its channel layer, its shared state): each logged once
per outage, and its end once. The channel layer and the state fail apart (a Kafka broker lost
while Redis answers), so each has an Outage of its own."""

import logging

from tracking import metrics

logger = logging.getLogger("tracking.relay")


class Outage:
    """Whether the relay is failing to reach one thing it depends on."""

    def __init__(self, what: str):
        self.what = what  # "channel layer" or "state", in the log
        self.failing = False
        self.on_recovery = None  # called once when an outage ends

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
        if not self.failing:
            self.failing = True
            logger.error("Relay lost its %s; retrying quietly", self.what, exc_info=error or True)

    def recovered(self) -> None:
        if self.failing:
            self.failing = False
            logger.warning("Relay reaches its %s again", self.what)
            if self.on_recovery is not None:
                self.on_recovery()
