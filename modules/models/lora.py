"""LoRAs on a loaded checkpoint, through diffusers' own adapters (peft).

Each LoRA file is loaded once per checkpoint as a named adapter (`load_lora_weights`) and kept
loaded. The active set is **fused** into the weights (`fuse_lora`), so a step costs what it costs
without LoRAs (peft's unfused layers add work to every step); the touched base tensors are backed
up first (in RAM) and copied back exactly when the set or a weight changes, or a job has no LoRA —
so weight 0 and removal give the base output bit-exactly. The fused set stays between jobs: the
same LoRAs again cost nothing. A quantized or offloaded checkpoint keeps the unfused adapters
(bnb weights cannot take a delta; offload hooks own the weights). A LoRA that cannot apply
(unknown, another architecture, keys that match nothing) is refused by name.
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
    """The adapters loaded into one checkpoint's pipeline, most recently used last, and the set fused now."""

    def __init__(self):
        self.order: list[str] = []
        self.fused: tuple[tuple[str, float], ...] = ()  # (adapter, weight) fused into the weights now
        self.backup: dict = {}  # peft layer -> its base weight before fusing (on the CPU)

    def fuse(self, pipe, names: list[str], weights: list[float]) -> None:
        """Merge the active adapters into their layers' weights, keeping each original weight tensor.

        Written here rather than diffusers' `fuse_lora` (which adds in place, so an exact restore needs a full
        copy first and a second pass back): on the CPU the fused weight is a new tensor and the original is
        kept as it is, so restoring is a pointer swap; on a GPU the original is copied to RAM (no second copy
        of the weights in VRAM) and the delta added in place."""
        import torch
        from peft.tuners.tuners_utils import BaseTunerLayer

        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=weights)  # sets each adapter's scaling, read by get_delta_weight
        with torch.no_grad():
            for component in _lora_components(pipe):
                for module in component.modules():
                    active = [n for n in names if isinstance(module, BaseTunerLayer) and n in module.lora_A]
                    if not active:
                        continue
                    weight = module.get_base_layer().weight
                    delta = module.get_delta_weight(active[0])
                    for more in active[1:]:
                        delta += module.get_delta_weight(more)
                    delta = delta.to(weight.dtype)
                    if weight.device.type == "cpu":
                        self.backup[module] = weight.data
                        weight.data = weight.data + delta
                    else:
                        self.backup[module] = weight.data.to("cpu", copy=True)
                        weight.data.add_(delta)
                    module.merged_adapters.extend(active)  # peft's forward now uses the base layer alone
        self.fused = tuple(zip(names, weights))

    def unfuse(self, pipe) -> None:
        """Back to the base weights, bit-exactly, and peft told that nothing is merged."""
        if not self.fused:
            return
        import torch

        with torch.no_grad():
            for module, original in self.backup.items():
                weight = module.get_base_layer().weight
                if original.device == weight.device and original.device.type == "cpu":
                    weight.data = original
                else:  # a GPU, or the model moved since fusing: copy back where the weight lives now
                    weight.data.copy_(original.to(weight.device))
                module.merged_adapters.clear()
        self.backup, self.fused = {}, ()
        pipe.disable_lora()  # unmerged adapters would otherwise act, unfused, on the next step

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


def _lora_components(pipe) -> list:
    return [c for c in (pipe.components.get(n) for n in pipe._lora_loadable_modules) if c is not None]


def unfuse_keeping_active(ckpt) -> None:
    """Before the weights move under an offload policy (the OOM retry): the same LoRAs, as unfused adapters."""
    state: LoraState = ckpt.loras
    if state.fused:
        names, weights = (list(x) for x in zip(*state.fused))
        state.unfuse(ckpt.pipe)
        ckpt.pipe.enable_lora()
        ckpt.pipe.set_adapters(names, adapter_weights=weights)


def can_fuse(ckpt) -> bool:
    return ckpt.quantization is None and "offload" not in ckpt.policy


@contextlib.contextmanager
def applied(registry, ckpt, wanted: list[tuple[str, float]]):
    """Activate `wanted` [(name, weight)] on `ckpt` for the body (fused when it can be, see above)."""
    entries = []
    for name, weight in wanted:
        entry = _lookup(registry, name)
        _check_arch(entry, ckpt.arch)
        registry.ensure_hash(entry)  # the infotext's "Lora hashes" needs it; cached after the first use
        entries.append((entry, float(weight)))
    pipe = ckpt.pipe
    state: LoraState = ckpt.loras
    if not entries:
        state.unfuse(pipe)
        yield []
        return
    names, weights = [], []
    for entry, weight in entries:
        adapter = adapter_name(entry)
        if weight != 0.0 and adapter not in names:  # weight 0 is left out: the base output, bit-exact
            names.append(adapter)
            weights.append(weight)
    fuse = can_fuse(ckpt)
    if state.fused != tuple(zip(names, weights)) or not fuse:
        state.unfuse(pipe)  # before loading more adapters: peft would unmerge (inexactly) on its own
    for entry, _ in entries:
        state.ensure(pipe, entry)
    state.evict(pipe, set(names))
    try:
        try:
            if not names:
                pipe.disable_lora()
            elif fuse and not state.fused:
                state.fuse(pipe, names, weights)
            elif not fuse:
                pipe.enable_lora()
                pipe.set_adapters(names, adapter_weights=weights)
        except Exception as exc:  # the adapters loaded but cannot be combined: name them, not a 500
            state.unfuse(pipe)
            listed = ", ".join(e.stem for e, _ in entries)
            raise InvalidRequest(f"LoRAs {listed} could not be activated together: {type(exc).__name__}: "
                                 f"{str(exc)[:300]}", "prompt") from None
        yield [AppliedLora(entry, weight) for entry, weight in entries]
    finally:
        if state.order and not state.fused:
            pipe.disable_lora()  # unfused adapters stay off outside the job: the base output, bit-exact
