"""The Redis transport the Celery app uses: kombu's, with one defect fixed.

When Redis goes away while the worker waits on BRPOP *and* holds unacknowledged messages
(a running batch, say), Celery 5.7 first ``collect()``s the broken connection — which
closes the transport and leaves the consumer's channel half closed, because its close
stopped at the failed BRPOP read — and then ``close()``s the connection, which closes that
channel again. The second close restores the unacknowledged messages, needs a Redis client
for it, and builds one from ``transport.client``, which ``collect()`` has just set to None:
``AttributeError: 'NoneType' object has no attribute 'hostname'`` in ``restore_unacked``.
An AttributeError is not a connection error, so it escapes Celery's reconnect loop and
the worker stops ("Unrecoverable error"). An idle worker survives (nothing to restore),
and so does one that holds exactly its prefetch limit (it is not in BRPOP); a worker with
a free process, or holding a countdown retry, does not. (Same class of bug as kombu
#582 and #970, on a new path; kombu 5.7.0 with redis-py 8.1.0, the latest releases.)

The fix: a channel whose connection was closed says so with a *connection* error. Every
caller in kombu and Celery already handles that one: the close goes on, an ack on the old
channel is logged as "Couldn't ack", and the consumer reconnects. What was unacknowledged
stays in Redis's ``unacked`` hash (restored after the visibility timeout, if Redis kept
it); the deliveries themselves are safe in the database either way (the sweeper).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:  # the transport was closed under this channel
            raise RedisConnectionError("the broker connection of this channel is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
