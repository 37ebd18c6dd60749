"""The errors a chain's client meets: a stage's refusal, a chain file that is not one, no
answer in time. Their own module, so that the client, its stream and the commands above them
all import them from below."""

from __future__ import annotations


class ChainError(RuntimeError):
    """A stage refused a frame; the message is the stage's own."""

    def __init__(self, seq: int, text: str) -> None:
        super().__init__(f"frame {seq}: {text}" if not text.startswith("stage") else text)
        self.seq = seq
        self.text = text


class ChainFileError(ValueError):
    """A chain file that does not describe a chain."""


class ChainTimeout(TimeoutError):
    """No answer in time; names the frames and the chain's ends."""
