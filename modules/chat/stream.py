"""The reply as it is generated: tokens → text pieces → the job's stream, stop strings cut out.

transformers calls the streamer from inside `generate` on the job worker thread, so each piece is
appended to the job's stream (`ctx.emit({"text": piece})`) the moment its token exists; readers
(the SSE route, the Chat tab) follow with their own cursors. Interrupt is a StoppingCriteria
reading ctx.interrupted, so Stop ends generation after the current token and the text so far stays.
"""
from __future__ import annotations

import time
from typing import Callable

REPLACEMENT = "\ufffd"  # a token that ends inside a multi-byte character decodes to this until the rest arrives


class ReplyText:
    """Collects decoded text, cuts it at the first stop string and emits only what is final.

    The tail that could still become a stop string is held back, so no stop string (or the start of
    one) ever reaches a reader; the pieces emitted concatenate to exactly `text`."""

    def __init__(self, stops: list[str], emit: Callable[[str], None]):
        self.stops = [s for s in stops if s]
        self._emit = emit
        self._buffer = ""
        self._sent = 0
        self.stopped = False  # a stop string was found: later text is ignored

    def feed(self, text: str) -> None:
        if self.stopped or not text:
            return
        self._buffer += text
        cut = self._first_stop()
        if cut is not None:
            self._buffer = self._buffer[:cut]
            self.stopped = True
            self._send(len(self._buffer))
            return
        self._send(len(self._buffer) - self._held_back())

    def finish(self) -> None:
        self._send(len(self._buffer))

    @property
    def text(self) -> str:
        return self._buffer

    def _first_stop(self) -> int | None:
        # Search only where a new match can start: a stop string may straddle the previous piece.
        start = max(0, self._sent - max((len(s) for s in self.stops), default=0))
        hits = [i for i in (self._buffer.find(s, start) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest tail of the buffer that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self._buffer)), longest, -1):
                if self._buffer.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _send(self, upto: int) -> None:
        if upto > self._sent:
            piece = self._buffer[self._sent:upto]
            self._sent = upto
            self._emit(piece)


class TokenClock:
    """When the first and the last generated token arrived, and how many there were."""

    def __init__(self, started: float):
        self.started = started
        self.first: float | None = None
        self.last: float | None = None
        self.tokens = 0

    def tick(self, n: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.tokens += n

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first is None else self.first - self.started

    @property
    def tokens_per_second(self) -> float | None:
        if self.first is None or self.last is None or self.tokens < 2 or self.last <= self.first:
            return None
        return (self.tokens - 1) / (self.last - self.first)


def streamer(tokenizer, reply: ReplyText, clock: TokenClock):
    """A transformers TextStreamer that passes each decoded piece to `reply` and counts tokens.

    TextStreamer holds text back to the last space (whole words); a chat shows each token, so only
    an unfinished multi-byte character is held back here."""
    from transformers import TextStreamer

    class ChatStreamer(TextStreamer):
        def put(self, value):
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            ids = value.reshape(-1).tolist()
            clock.tick(len(ids))
            self.token_cache.extend(ids)
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if text.endswith("\n"):  # a finished line: start decoding afresh (keeps decode cost per line)
                printable, self.token_cache, self.print_len = text[self.print_len:], [], 0
            else:
                end = len(text.rstrip(REPLACEMENT))
                printable = text[self.print_len:end]
                self.print_len = max(self.print_len, end)
            self.on_finalized_text(printable)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            reply.feed(text)

    return ChatStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def interrupt_criteria(is_interrupted: Callable[[], bool]):
    """Stop generating after the current token once the job is interrupted (the partial reply stays)."""
    import torch
    from transformers import StoppingCriteria

    class Interrupted(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), bool(is_interrupted()), dtype=torch.bool,
                              device=input_ids.device)

    return Interrupted()
