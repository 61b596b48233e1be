"""A queue consumer reconnecting to its broker with backoff (``python -m examples.queue_consumer``).

The broker is simulated in-process: a small line-based server on 127.0.0.1 (the OS picks the
port) that delivers messages one at a time, waits for each ``ACK``, redelivers what was not
acknowledged, and is unreliable on purpose: it drops the first connection in the middle of
a delivery, drops the second one at once (as if it were restarting), and serves the third
until every message is acknowledged, then says ``END``.

The consumer is one task body: connect, then read, handle and acknowledge messages. A lost
connection is a retryable failure (``Fail``), so the supervisor reconnects after an
exponential backoff with jitter. Delivery is at-least-once, so the consumer skips message
ids it has already handled. (A real consumer would never return; this one returns at
``END`` so the example ends.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import taskvisor as tv


class FlakyBroker:
    """In-memory messages behind a TCP server that drops connections on a plan."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = dict(enumerate(messages, start=1))
        self.unacked = list(self.messages)
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FlakyBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        drop_after = {1: 3, 2: 0}.get(self.connections)  # deliveries before the drop
        sent = 0
        try:
            while self.unacked:
                if sent == drop_after:
                    return  # drop the connection (the finally closes it)
                msg_id = self.unacked[0]
                writer.write(f"MSG {msg_id} {self.messages[msg_id]}\n".encode())
                await writer.drain()
                sent += 1
                if sent == drop_after:
                    return  # dropped before the ACK arrives: this message will come again
                if (await reader.readline()).decode().strip() == f"ACK {msg_id}":
                    self.unacked.pop(0)
            writer.write(b"END\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


class Retries(tv.Subscriber):
    """Prints each scheduled reconnection."""

    def on_event(self, event: tv.Event) -> None:
        if event.kind is tv.EventKind.BACKOFF_SCHEDULED:
            print(f"  reconnecting in {event.delay:.3f}s ({event.reason})", flush=True)


async def main(short: bool = False) -> int:
    handled: list[int] = []

    async with FlakyBroker([f"order-{n}" for n in range(1, 9)]) as broker:

        async def consume(ctx: tv.TaskContext) -> None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
            except OSError as exc:
                raise tv.Fail(f"cannot connect: {exc}") from exc
            print(f"connection {ctx.attempt}: connected", flush=True)
            try:
                while True:
                    line = (await reader.readline()).decode()
                    if not line:
                        raise tv.Fail("broker closed the connection")
                    if line == "END\n":
                        return
                    _, msg_id, body = line.split(" ", 2)
                    if int(msg_id) in handled:
                        print(f"  duplicate {msg_id} skipped", flush=True)
                    else:
                        handled.append(int(msg_id))
                        print(f"  handled {msg_id}: {body.strip()}", flush=True)
                    writer.write(f"ACK {msg_id}\n".encode())
                    await writer.drain()
            except ConnectionError as exc:
                raise tv.Fail(f"connection lost: {exc}") from exc
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        spec = tv.TaskSpec.restartable(
            "order-consumer",
            consume,
            # The streak (and so the delay) resets only when an attempt succeeds: an attempt
            # of a consumer that never returns cannot succeed, so `max` bounds the delay and
            # max_retries=None keeps it reconnecting for ever.
            backoff=tv.BackoffPolicy.exponential(0.02 if short else 0.5, max=30.0),
            max_retries=None,
        )
        async with tv.Supervisor(subscribers=[Retries()]) as sup:
            outcome = await asyncio.wait_for(sup.add(spec), timeout=60)

    print(f"outcome: {outcome.kind.value} after {outcome.attempts} connections")
    print(f"handled: {handled}")
    return 0 if handled == list(range(1, 9)) and outcome.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
