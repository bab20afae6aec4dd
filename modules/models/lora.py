"""LoRAs on a loaded checkpoint, through diffusers' own adapters (peft), never a weight edit.

Each LoRA file is loaded once per checkpoint as a named adapter (`load_lora_weights`) and kept
loaded, so a changed weight between generations is one `set_adapters` call. Outside a job the
adapters are disabled (`disable_lora`), which gives the base output bit-exactly. A LoRA that
cannot apply (unknown, another architecture, keys that match nothing) is refused by name.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass

from modules.errors import AtelierError, InvalidRequest, NotFound
from modules.models.registry import ModelEntry

log = logging.getLogger("atelier.models")

MAX_LOADED_ADAPTERS = 12
_NO_MATCH = ("LoRA {!r} has no keys that match this checkpoint's UNet or text encoder, so it would do nothing; "
             "it is not a LoRA for this model (or not a LoRA at all)")  # beyond this the least recently used adapter is deleted from the pipeline


@dataclass
class AppliedLora:
    entry: ModelEntry
    weight: float

    @property
    def name(self) -> str:
        return self.entry.stem


def adapter_name(entry: ModelEntry) -> str:
    """A peft-safe adapter name that changes when the file changes (path + size + mtime)."""
    stat = entry.path.stat()
    digest = hashlib.sha1(f"{entry.path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:8]
    return "lora_" + re.sub(r"[^A-Za-z0-9_]", "_", entry.stem)[:40] + "_" + digest


def _lookup(registry, name: str) -> ModelEntry:
    try:
        try:
            return registry.get("lora", name)
        except NotFound:
            registry.refresh("lora")  # a file dropped in since the last scan
            return registry.get("lora", name)
    except AtelierError as exc:
        raise InvalidRequest(f"LoRA {name!r} in the prompt: {exc.message}", "prompt") from None


def _check_arch(entry: ModelEntry, ckpt_arch: str) -> None:
    lora_arch = entry.arch
    if lora_arch and ckpt_arch and lora_arch != ckpt_arch:
        raise InvalidRequest(
            f"LoRA {entry.stem!r} is for {lora_arch.upper()} but the checkpoint is {ckpt_arch.upper()}; "
            f"pick a {ckpt_arch.upper()} LoRA or switch the checkpoint", "prompt")


def _loaded_names(pipe) -> set[str]:
    try:
        return {n for names in pipe.get_list_adapters().values() for n in names}
    except Exception:  # no adapter anywhere yet: peft raises instead of returning {}
        return set()


def _load(pipe, entry: ModelEntry, name: str) -> None:
    before = _loaded_names(pipe)
    try:
        pipe.load_lora_weights(str(entry.path), adapter_name=name)
    except Exception as exc:  # wrong shapes (another architecture), a corrupt file, foreign keys
        with contextlib.suppress(Exception):
            if name in _loaded_names(pipe):
                pipe.delete_adapters([name])
        if "NoMatching" in type(exc).__name__ or "not found in the base model" in str(exc):
            raise InvalidRequest(_NO_MATCH.format(entry.stem), "prompt") from None
        raise InvalidRequest(
            f"LoRA {entry.stem!r} could not be applied to this checkpoint: {type(exc).__name__}: "
            f"{str(exc)[:300]}", "prompt") from None
    if name not in _loaded_names(pipe) - before:
        raise InvalidRequest(_NO_MATCH.format(entry.stem), "prompt")


class LoraState:
    """The adapters loaded into one checkpoint's pipeline, most recently used last."""

    def __init__(self):
        self.order: list[str] = []

    def ensure(self, pipe, entry: ModelEntry) -> str:
        name = adapter_name(entry)
        if name in self.order and name in _loaded_names(pipe):
            self.order.remove(name)
        else:
            _load(pipe, entry, name)
        self.order.append(name)
        return name

    def evict(self, pipe, keep: set[str]) -> None:
        while len(self.order) > MAX_LOADED_ADAPTERS:
            victim = next((n for n in self.order if n not in keep), None)
            if victim is None:
                return
            self.order.remove(victim)
            with contextlib.suppress(Exception):
                pipe.delete_adapters([victim])


@contextlib.contextmanager
def applied(registry, ckpt, wanted: list[tuple[str, float]]):
    """Activate `wanted` [(name, weight)] on `ckpt` for the body; disable all adapters afterwards."""
    entries = []
    for name, weight in wanted:
        entry = _lookup(registry, name)
        _check_arch(entry, ckpt.arch)
        registry.ensure_hash(entry)  # the infotext's "Lora hashes" needs it; cached after the first use
        entries.append((entry, float(weight)))
    if not entries:
        yield []
        return
    pipe = ckpt.pipe
    state: LoraState = ckpt.loras
    names, weights = [], []
    for entry, weight in entries:
        adapter = state.ensure(pipe, entry)
        if weight != 0.0 and adapter not in names:  # weight 0 is left out: the base output, bit-exact
            names.append(adapter)
            weights.append(weight)
    state.evict(pipe, set(names))
    try:
        try:
            if names:
                pipe.enable_lora()
                pipe.set_adapters(names, adapter_weights=weights)
            else:
                pipe.disable_lora()
        except Exception as exc:  # the adapters loaded but cannot be combined: name them, not a 500
            listed = ", ".join(e.stem for e, _ in entries)
            raise InvalidRequest(f"LoRAs {listed} could not be activated together: {type(exc).__name__}: "
                                 f"{str(exc)[:300]}", "prompt") from None
        yield [AppliedLora(entry, weight) for entry, weight in entries]
    finally:
        if state.order:
            pipe.disable_lora()
