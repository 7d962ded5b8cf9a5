"""Start a replica: daphne, on uvloop, with the garbage collector set for thousands of sockets.
`python -m teamtrack.serve` takes daphne's own arguments.

- uvloop: daphne makes its event loop when its server module is imported, so uvloop's policy
  has to be in place before that, which the `daphne` command itself cannot do. On uvloop the
  event loop's own work (scheduling, timers, the Redis and Kafka clients' sockets) costs less:
  measured with `python -m loadtest.bench` at 2,000 devices, 162 against 198 µs of server CPU a
  position, and 66 against 82 for the bare floor (docs/performance.md).
- The garbage collector: a full collection walks every object the process holds, and a replica
  holds thousands of sockets' objects; at 5,000 devices on two replicas each one stopped the
  event loop for 125-300 ms, every 7 s or so, which was most of the p99. What was loaded before
  the server started (Django, the application) is frozen out of those walks, and the youngest
  generation is collected every GC_YOUNG_THRESHOLD allocations instead of 700, which makes full
  collections about that much rarer.

`manage.py runserver` keeps asyncio's loop and Python's defaults: development needs no speed.
"""

import asyncio
import gc

import uvloop

GC_YOUNG_THRESHOLD = 10_000


def main() -> None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from daphne.cli import CommandLineInterface  # makes daphne's loop: after the policy
    from twisted.internet import reactor

    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    reactor.callWhenRunning(gc.freeze)  # daphne has imported the application by then
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
