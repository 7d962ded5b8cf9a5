"""The log filter that keeps an outage to a few lines."""

import logging

from tracking.logs import RepeatsOncePerMinute


def test_a_repeating_record_passes_once_a_minute_with_a_count(caplog, monkeypatch):
    logger = logging.getLogger("test.repeats")
    repeats = RepeatsOncePerMinute()
    logger.addFilter(repeats)
    try:
        with caplog.at_level(logging.ERROR, logger="test.repeats"):
            for _ in range(30):
                logger.error("Unexpected exception in receive task")
            logger.error("Something else")
            monkeypatch.setattr(RepeatsOncePerMinute, "INTERVAL", 0.0)
            logger.error("Unexpected exception in receive task")
    finally:
        logger.removeFilter(repeats)
    assert [record.getMessage() for record in caplog.records] == [
        "Unexpected exception in receive task",
        "Something else",
        "Unexpected exception in receive task (and 29 more like it in the last minute)",
    ]


def test_request_lines_lose_their_query_strings(caplog):
    """runserver logs each request's path with its query string, where an OsmAnd device's
    token travels."""
    logger = logging.getLogger("django.channels.server")
    details = {"method": "GET", "path": "/osmand/?id=tt_secret&lat=1", "status": 200}
    with caplog.at_level(logging.INFO, logger="django.channels.server"):
        logger.info("HTTP %(method)s %(path)s %(status)s", details)
    assert [record.getMessage() for record in caplog.records] == ["HTTP GET /osmand/?… 200"]
