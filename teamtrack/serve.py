"""Start a replica: daphne, on uvloop. `python -m teamtrack.serve` takes daphne's own arguments.

daphne makes its event loop when its server module is imported, so uvloop's policy has to be
in place before that, which the `daphne` command itself cannot do. On uvloop the event loop's
own work (scheduling, timers, the Redis and Kafka clients' sockets) costs less: measured with
`python -m loadtest.bench` at 2,000 devices, 162 against 198 µs of server CPU a position, and
66 against 82 for the bare floor (docs/performance.md). `manage.py runserver` keeps asyncio's
loop: development needs no speed.
"""

import asyncio

import uvloop


def main() -> None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from daphne.cli import CommandLineInterface  # makes daphne's loop: after the policy

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
