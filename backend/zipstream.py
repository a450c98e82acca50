"""stream-zip's synchronous ZIP writer driven from asyncio, cancellable at any moment.

stream-zip writes ZIP records in a plain generator; its own `async_stream_zip` runs that
generator in a thread which pulls each member chunk back from the event loop with
`run_coroutine_threadsafe(...).result()`. When the consuming task is cancelled (a worker's
SIGTERM, a cancelled job), that thread stays blocked on a future the closed loop never resolves,
and the interpreter's exit joins the thread forever: the worker never exits.

Here the thread waits on a future that the consumer cancels on its way out, so a cancelled or
failed archive ends its writer thread at once (the thread raises `WriterStopped` inside the
generator, which unwinds and returns).

An archive small enough to hold whole (`inline=True`, the caller's call) skips the thread: its
members are read first, then zipped on the event loop. For a one-file job of a few KiB the
thread, its start and its hand-offs cost more than the ZIP itself (bench/queueing.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

from stream_zip import stream_zip

T = TypeVar("T")

# (name, modified, mode, method, chunks): stream-zip's member tuple with async chunks.
AsyncMember = tuple[str, Any, int, Any, AsyncIterable[bytes]]


class WriterStopped(Exception):
    """Raised inside the writer thread when the consumer has gone away."""


class _Bridge:
    """Lets the writer thread await coroutines on the loop, until `stop()` is called."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[Any] | None = None
        self._stopped = False

    def wait(self, awaitable: Any) -> Any:
        """Run `awaitable` on the loop and block this (non-loop) thread for its result."""
        with self._lock:
            if self._stopped:
                awaitable.close()
                raise WriterStopped
            try:
                future = asyncio.run_coroutine_threadsafe(awaitable, self._loop)
            except RuntimeError as exc:  # the loop has closed under us
                awaitable.close()
                raise WriterStopped from exc
            self._pending = future
        try:
            return future.result()
        except concurrent.futures.CancelledError as exc:
            raise WriterStopped from exc
        finally:
            with self._lock:
                self._pending = None

    def stop(self) -> None:
        """Called on the loop: wake the writer thread out of any wait, now and later."""
        with self._lock:
            self._stopped = True
            if self._pending is not None:
                self._pending.cancel()

    def iterate(self, source: AsyncIterable[T]) -> Iterator[T]:
        iterator = source.__aiter__()

        async def step() -> T:
            return await iterator.__anext__()

        while True:
            try:
                value = self.wait(step())
            except StopAsyncIteration:
                return
            yield value


async def zip_stream(
    members: AsyncIterable[AsyncMember],
    *,
    chunk_size: int,
    get_compressobj: Callable[[], Any],
    inline: bool = False,
) -> AsyncIterator[bytes]:
    """The ZIP file of `members` (stream-zip member tuples), as chunks of about `chunk_size`.

    Raises whatever a member's chunk iterator raises. Cancelling the consumer or closing this
    generator stops the writer thread within one chunk. With `inline`, every member's bytes
    are held in memory at once and zipped on the event loop: for small archives only.
    """
    if inline:
        held = []
        async for name, modified, mode, method, chunks in members:
            held.append((name, modified, mode, method, [chunk async for chunk in chunks]))
        for zipped in stream_zip(held, chunk_size=chunk_size, get_compressobj=get_compressobj):
            yield zipped
        return
    loop = asyncio.get_running_loop()
    bridge = _Bridge(loop)

    def sync_members() -> Iterable[tuple[str, Any, int, Any, Iterable[bytes]]]:
        for name, modified, mode, method, chunks in bridge.iterate(members):
            yield name, modified, mode, method, bridge.iterate(chunks)

    writer = stream_zip(sync_members(), chunk_size=chunk_size, get_compressobj=get_compressobj)
    done: Any = object()
    # One thread per archive, not the loop's shared executor: a writer parked on a slow source
    # must not take a slot that another job's writer needs.
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="zip")
    try:
        while True:
            context = contextvars.copy_context()
            chunk: Any = await loop.run_in_executor(
                executor,
                functools.partial(context.run, next, writer, done),  # type: ignore[arg-type]
            )
            if chunk is done:
                return
            yield chunk
    finally:
        bridge.stop()
        # The thread is now leaving the generator (or already has); nothing waits on it here.
        executor.shutdown(wait=False, cancel_futures=True)
