import logging

from tracking.outage import Outage


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def fail(message: str):
    raise ConnectionError(message)


async def succeed():
    return "ok"


async def test_an_outage_logs_one_traceback_and_one_recovery(caplog):
    outage = Outage("state", clock=Clock())
    with caplog.at_level(logging.INFO, logger="tracking.relay"):
        for _ in range(5):
            assert await outage.guard(fail("refused")) is None
        assert await outage.guard(succeed()) == "ok"
    assert [(r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("Relay lost its state; retrying quietly", True),
        ("Relay reaches its state again", False),
    ]


async def test_a_flapping_dependency_logs_its_traceback_once_a_minute(caplog):
    clock = Clock()
    outage = Outage("channel layer", clock=clock)
    with caplog.at_level(logging.INFO, logger="tracking.relay"):
        for now in (0.0, 1.0, 59.0, 60.0):
            clock.now = now
            await outage.guard(fail(f"refused at {now:g}"))
            await outage.guard(succeed())
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert [(r.getMessage(), r.exc_info is not None) for r in lost] == [
        ("Relay lost its channel layer; retrying quietly", True),
        (
            "Relay lost its channel layer again (ConnectionError('refused at 1')); "
            "retrying quietly",
            False,
        ),
        (
            "Relay lost its channel layer again (ConnectionError('refused at 59')); "
            "retrying quietly",
            False,
        ),
        ("Relay lost its channel layer; retrying quietly", True),
    ]
