"""Logging filters: an outage is a few lines in the log, not one traceback a second."""

import logging
import time


class RepeatsOncePerMinute(logging.Filter):
    """Lets a repeating record (same logger, level and message) through once a minute, and says
    how many like it were held back since.

    channels-redis logs a traceback every second while Redis is down, and Django one error per
    failed readiness probe; the first of each says all there is to say.
    """

    INTERVAL = 60.0

    def __init__(self, name: str = ""):
        super().__init__(name)
        self.last_emitted: dict[tuple, tuple[float, int]] = {}  # key -> (when, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage()[:200])
        now = time.monotonic()
        emitted_at, held_back = self.last_emitted.get(key, (-self.INTERVAL, 0))
        if now - emitted_at < self.INTERVAL:
            self.last_emitted[key] = (emitted_at, held_back + 1)
            return False
        if len(self.last_emitted) > 1000:  # many distinct messages: start over
            self.last_emitted.clear()
        self.last_emitted[key] = (now, 0)
        if held_back:
            record.msg = f"{record.msg} (and {held_back} more like it in the last minute)"
        return True


class QueryStringsOut(logging.Filter):
    """Keeps query strings out of request records: the OsmAnd protocol's device id, a worker's
    token, travels there. It cuts them from runserver's request lines, and drops the request
    that Django attaches to its own records (error reports would print its GET parameters).
    nginx logs paths only, and the replicas behind it keep no access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and isinstance(record.args.get("path"), str):
            path, _, query = record.args["path"].partition("?")
            if query:
                record.args = {**record.args, "path": path + "?…"}
        request = getattr(record, "request", None)
        if request is not None and getattr(request, "META", {}).get("QUERY_STRING"):
            del record.request
        return True
