"""KV prefix reuse between the turns of one conversation (transformers' DynamicCache).

After a reply, the cache holds the keys/values of the prompt and the reply. The next turn's prompt
starts with the same tokens (the template renders the history the same way), so only the tokens
after the longest common prefix are computed; the cache is cropped back to that prefix first, and
generate() skips the tokens it already holds. Entries are keyed by (conversation, model, load
options), bounded (least recently used out), and forgotten when the model is unloaded, moved off
its device or reloaded with other options (the model manager tells us).

The cache is built without the model config, so sliding-window layers keep every position: a
sliding-window layer that has dropped old positions cannot be cropped back (transformers refuses),
and the model's own masks still apply the window. The price is memory for those layers' history.
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 4  # conversations kept warm; each holds a whole history's keys and values


@dataclass
class _Entry:
    model: Any  # the torch module the keys/values belong to
    token_ids: list[int]  # what the cache holds, position by position
    cache: Any  # a transformers DynamicCache


@dataclass
class Reuse:
    cache: Any  # DynamicCache to pass to generate (cropped to `reused` tokens), or None: no cache kept
    reused: int = 0  # prompt tokens not computed again
    image_from: int = 0  # images before this index are inside the reused prefix (their features are cached)


class PrefixCache:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def take(self, key: tuple, model, prompt_ids: list[int], image_token_id: int | None = None) -> Reuse:
        """A cache for `prompt_ids`: the stored one cropped to the shared prefix, or a fresh one."""
        from transformers import DynamicCache

        with self._lock:
            entry = self._entries.pop(key, None)  # the job owns it now; put() brings it back
        if entry is None or entry.model is not model:
            self.misses += 1
            return Reuse(DynamicCache())
        shared = _common_prefix(entry.token_ids, prompt_ids)
        shared = min(shared, len(prompt_ids) - 1)  # generate needs at least one new token to compute
        image_from = 0
        if image_token_id is not None:
            shared, image_from = _not_inside_an_image(prompt_ids, shared, image_token_id)
        if shared <= 0:
            self.misses += 1
            return Reuse(DynamicCache())
        held = entry.cache.get_seq_length()
        if held > shared:
            entry.cache.crop(shared - held)  # a negative count removes that many positions from the end
        self.hits += 1
        return Reuse(entry.cache, shared, image_from)

    def put(self, key: tuple, model, token_ids: list[int], cache) -> None:
        """Keep `cache` (holding `token_ids`' positions) for the next turn of `key`."""
        if cache is None:
            return
        held = cache.get_seq_length()
        with self._lock:
            self._entries[key] = _Entry(model, list(token_ids[:held]), cache)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget_model(self, model) -> int:
        """Drop every entry of `model` (it was unloaded, moved or reloaded); returns how many."""
        with self._lock:
            gone = [k for k, e in self._entries.items() if e.model is model]
            for k in gone:
                del self._entries[k]
        return len(gone)

    def forget(self, key: tuple) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _not_inside_an_image(ids: list[int], shared: int, image_token_id: int) -> tuple[int, int]:
    """Move the reuse boundary back to the start of an image it would cut; count the images before it.

    Images inside the reused prefix are already in the cache (their pixel values are not sent again);
    an image after the boundary is encoded as usual."""
    images_before, i = 0, 0
    while i < len(ids):
        if ids[i] != image_token_id:
            i += 1
            continue
        start = i
        while i < len(ids) and ids[i] == image_token_id:
            i += 1
        if i <= shared:
            images_before += 1
        else:
            return min(shared, start), images_before
    return shared, images_before
