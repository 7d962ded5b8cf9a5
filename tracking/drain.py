"""Graceful stop on SIGTERM: a replica drains before daphne stops.

Left alone, daphne stops on SIGTERM by cancelling every application at once: clients see their
sockets drop (1006) with positions of the current window unsent. Instead, on SIGTERM we:
1. stop listening, so that nginx sends new sockets to the other replicas (a refused connection
   is retried on the next upstream);
2. let the relay publish and deliver what it holds, acknowledge it, and close every socket with
   4012, so that clients reconnect to another replica at once;
3. give the closes a moment to go out, then hand SIGTERM back to the server, which stops.
"""

import asyncio
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

CLOSE_GRACE = 0.5  # seconds for the close frames to leave before the server stops

_installed = False


def install(relay) -> None:
    """Drain `relay` on SIGTERM; only under a running Twisted reactor (daphne), and only once."""
    global _installed
    reactor = _running_reactor()
    if _installed or reactor is None:
        return
    _installed = True
    loop = asyncio.get_running_loop()
    server_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm():
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, server_handler)
        asyncio.ensure_future(_drain_then_stop(relay, reactor))

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)


def _running_reactor():
    if "twisted.internet.reactor" not in sys.modules:
        return None
    from twisted.internet import reactor

    return reactor if reactor.running else None


async def _drain_then_stop(relay, reactor) -> None:
    try:
        from twisted.internet.tcp import Port

        for reader in reactor.getReaders():
            if isinstance(reader, Port):
                reader.stopListening()
        await relay.drain()
        logger.info("Drained: every socket closed with 4012; stopping")
        await asyncio.sleep(CLOSE_GRACE)
    except Exception:
        logger.exception("Draining failed; stopping anyway")
    os.kill(os.getpid(), signal.SIGTERM)  # to the server's own handler, restored above
