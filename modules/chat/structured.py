"""response_format json_object / json_schema, enforced while decoding with llguidance.

At each step llguidance computes which tokens keep the output a valid prefix of the grammar (a JSON
schema compiled to one); the others get -inf logits, so the reply parses and validates by
construction — nothing is retried. Whitespace is compact (no free whitespace between tokens):
with it, a weak model fills max_new_tokens with spaces and never closes the object.

Why llguidance: it works with transformers 5 here (lm-format-enforcer's integration does not
import) and needs no GPU compiler (xgrammar pulls triton).
"""
from __future__ import annotations

import json
import threading
import weakref
from typing import TYPE_CHECKING

from modules.errors import InvalidRequest

if TYPE_CHECKING:
    from modules.chat.params import ResponseFormat

FIELD = "response_format"
_COMPACT = {"whitespace_flexible": False}


def grammar(fmt: "ResponseFormat | None") -> str | None:
    """The llguidance grammar for a response format (None for plain text); InvalidRequest when the
    schema uses something llguidance cannot enforce."""
    schema = fmt.schema if fmt is not None else None
    if schema is None:
        return None
    import llguidance

    where = FIELD + (".json_schema" if fmt.type == "json_schema" else "")
    try:
        compiled = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=_COMPACT)
    except ValueError as exc:
        raise InvalidRequest(f"the schema cannot be compiled: {exc}", where) from None
    problem = llguidance.LLMatcher.validate_grammar(compiled)
    if problem and not problem.startswith("WARNING"):
        raise InvalidRequest(f"the schema cannot be enforced while decoding: {problem[:300]}", where)
    return compiled


class GrammarTokenizers:
    """llguidance's view of a tokenizer (about a second to build for a large vocabulary), kept per
    tokenizer object for as long as that tokenizer lives."""

    def __init__(self):
        self._made: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, tokenizer, vocab_size: int, eos_ids: list[int]):
        import llguidance.hf

        key = (vocab_size, tuple(eos_ids))
        with self._lock:
            known = self._made.get(tokenizer, {})
            if key not in known:
                try:
                    known[key] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(eos_ids))
                except ValueError as exc:
                    raise InvalidRequest(f"structured output needs a fast (tokenizers) tokenizer: {exc}",
                                         FIELD) from None
                self._made[tokenizer] = known
            return known[key]


class GrammarLogits:
    """A logits processor for generate(): tokens the grammar forbids get -inf.

    generate() calls it once per step with every token so far; the first call sees the prompt only,
    each later one a single new token to advance the matcher by."""

    def __init__(self, matcher):
        import torch

        self.matcher = matcher
        self._started = False
        self._bits = torch.arange(32, dtype=torch.int32)

    def __call__(self, input_ids, scores):
        import torch

        if self._started:
            self.matcher.consume_token(int(input_ids[0, -1]))
        self._started = True
        if self.matcher.is_error():
            return scores  # cannot happen with the mask applied; never turn a reply into an exception
        words = torch.frombuffer(bytearray(self.matcher.compute_bitmask()), dtype=torch.int32)
        allowed = ((words.unsqueeze(-1) >> self._bits) & 1).reshape(-1).bool()
        vocab = scores.shape[-1]
        if allowed.numel() < vocab:
            allowed = torch.cat([allowed, allowed.new_zeros(vocab - allowed.numel())])
        return scores.masked_fill(~allowed[:vocab].to(scores.device), float("-inf"))


def logits_processor(fmt: "ResponseFormat | None", lm, tokenizers: GrammarTokenizers, eos_ids: list[int]):
    """The processor enforcing `fmt` on `lm`'s output, or None for plain text."""
    compiled = grammar(fmt)
    if compiled is None:
        return None
    import llguidance

    vocab = lm.model.config.get_text_config().vocab_size
    matcher = llguidance.LLMatcher(tokenizers.get(lm.tokenizer, vocab, eos_ids), compiled)
    if matcher.is_error():
        raise InvalidRequest(f"the schema cannot be enforced with this tokenizer: {matcher.get_error()[:300]}", FIELD)
    return GrammarLogits(matcher)
