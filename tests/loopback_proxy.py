"""A loopback TCP proxy a test can stop and start: a server that goes away
(every connection dropped, new ones refused) and comes back on the same port;
or, with ``black_hole``, one that accepts connections and never answers."""

from __future__ import annotations

import asyncio
import contextlib
import functools


class LoopbackProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.connections = 0
        """Connections accepted so far."""
        self.black_hole = False
        """Accept new connections, read nothing from them, answer nothing."""
        self.held = 0
        """Connections accepted into the black hole so far."""
        self._server: asyncio.Server | None = None
        self._stopped = asyncio.Event()
        """Set by :meth:`stop` for the connections accepted since :meth:`start`."""
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def active(self) -> int:
        """Client connections open now."""
        return len(self._open) // 2

    async def start(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(functools.partial(self._accept, self._stopped), "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and drop the open ones (a crash, seen from the client),
        also those still being accepted or connected upstream."""
        self._stopped.set()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, stopped: asyncio.Event, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if stopped.is_set():  # accepted before stop(), handled after it: it dies with the others
            writer.transport.abort()
            return
        if self.black_hole:
            await self._hold(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        if stopped.is_set():  # stop() came while connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        pipes = [asyncio.create_task(self._pipe(reader, up_writer)), asyncio.create_task(self._pipe(up_reader, writer))]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()

    async def _hold(self, writer: asyncio.StreamWriter) -> None:
        """Keep the connection open and silent until the client gives up or :meth:`stop`."""
        self.held += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
