"""A small async micro-batcher: concurrent requests share one forward pass.

`await batcher.submit(array)` queues one preprocessed image; a single worker task takes the first waiting
image, then whatever else arrives within `max_wait_ms` (up to `max_batch` images), stacks them, runs the
model once in a worker thread (the event loop keeps accepting requests meanwhile) and hands each request
its own row. One model call at a time: a model is not called from two threads at once (`lock`, which
other uses of the model, e.g. the attention rollout, hold too).
"""

from __future__ import annotations

import asyncio
import time


class MicroBatcher:
    def __init__(self, run, *, max_batch: int = 16, max_wait_ms: float = 5.0):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue | None = None
        self.lock: asyncio.Lock | None = None
        self.worker: asyncio.Task | None = None
        self.batches: list[int] = []  # the size of every batch run so far (for /health and tests)

    async def start(self) -> None:
        self.queue, self.lock = asyncio.Queue(), asyncio.Lock()
        self.worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass

    async def exclusive(self, fn, *args):
        """`fn(*args)` in a worker thread, while no batch runs."""
        if self.worker is None:
            await self.start()
        async with self.lock:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def submit(self, array):
        """The model's output row for one (3, H, W) array."""
        if self.worker is None:
            await self.start()
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((array, future))
        return await future

    async def _loop(self) -> None:
        import numpy as np

        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(items) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            items = [(a, f) for a, f in items if not f.cancelled()]  # a client that went away
            if not items:
                continue
            self.batches.append(len(items))
            try:
                async with self.lock:
                    out = await loop.run_in_executor(None, self.run, np.stack([a for a, _ in items]))
            except Exception as e:  # noqa: BLE001 - every waiting request gets the failure, the loop goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            for row, (_, future) in zip(out, items):
                if not future.done():
                    future.set_result(row)
