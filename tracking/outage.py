"""Failures of the relay's state or channel layer: logged once per outage, and its end once."""

import logging

from tracking import metrics

logger = logging.getLogger("tracking.relay")


class Outage:
    """Whether the relay is failing to reach its state or channel layer."""

    def __init__(self):
        self.failing = False
        self.on_recovery = None  # called once when an outage ends

    async def guard(self, operation):
        """Await a state or layer operation; on failure report it and return None."""
        try:
            result = await operation
        except Exception:
            metrics.RELAY_ERRORS.inc()
            self.failed()
            return None
        self.recovered()
        return result

    def failed(self, error: BaseException | None = None) -> None:
        """Report a failure (`error`, or the exception being handled), once per outage."""
        if not self.failing:
            self.failing = True
            logger.error(
                "Relay lost its state or channel layer; retrying quietly", exc_info=error or True
            )

    def recovered(self) -> None:
        if self.failing:
            self.failing = False
            logger.warning("Relay reaches its state and channel layer again")
            if self.on_recovery is not None:
                self.on_recovery()
