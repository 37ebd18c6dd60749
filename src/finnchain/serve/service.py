"""What both transports serve: the model, whether the chain is ready (every stage answers its
metrics endpoint, surveyed every ``SURVEY_EVERY`` seconds, and the last stage its HELLO), and
inference with the chain's failures turned into the protocol's errors."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np

from finnchain.runtime.client import survey
from finnchain.serve.dispatch import ChainUnavailable, Dispatcher, FrameFailed
from finnchain.serve.oip import (
    FAILED,
    TIMEOUT,
    UNAVAILABLE,
    ModelInfo,
    ProtocolError,
    server_metadata,
)

SURVEY_EVERY = 1.0  # seconds between looks at every stage's metrics endpoint


class Service:
    def __init__(self, model: ModelInfo, dispatcher: Dispatcher) -> None:
        self.model, self.dispatcher = model, dispatcher
        self.stages: list[dict] = []  # the last survey: name, uptime (None: no answer)
        self.surveyed = 0.0

    def server_metadata(self) -> dict:
        return server_metadata()

    def ready(self) -> bool:
        """Every stage answers (when the chain file names their metrics endpoints) and the
        last stage has welcomed the server."""
        fresh = time.monotonic() - self.surveyed < 3 * SURVEY_EVERY + 2
        return self.dispatcher.connected and fresh and all(
            s["uptime"] is not None for s in self.stages)

    def down(self) -> list[str]:
        return [s["name"] for s in self.stages if s["uptime"] is None]

    async def watch(self) -> None:
        """Survey the stages for ever (a task of the server's event loop)."""
        spec = self.dispatcher.spec
        while True:
            self.stages = await asyncio.to_thread(survey, spec, SURVEY_EVERY)
            self.surveyed = time.monotonic()
            await asyncio.sleep(SURVEY_EVERY)

    async def infer(self, frames: np.ndarray) -> np.ndarray:
        d = self.dispatcher
        # every frame ends within the chain's timeout once sent; frames wait their turn behind
        # at most a window's worth of others per round
        limit = d.timeout * (2 + math.ceil(len(frames) / d.window))
        try:
            return await asyncio.wait_for(d.infer(frames), limit)
        except ChainUnavailable as exc:
            down = self.down()
            raise ProtocolError(UNAVAILABLE, f"{exc}" + (f" ({', '.join(down)} not answering)"
                                                         if down else "")) from None
        except FrameFailed as exc:
            raise ProtocolError(FAILED, str(exc)) from None
        except asyncio.TimeoutError:
            raise ProtocolError(TIMEOUT, f"no answer within {limit:g} s for {len(frames)} "
                                         "frames") from None
