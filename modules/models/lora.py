"""LoRAs on a loaded checkpoint, through diffusers' own adapters (peft).

Each LoRA file is loaded once per checkpoint as a named adapter (`load_lora_weights`) and kept
loaded. The active set is **fused** into the weights (LoraState.fuse), so a step costs what it
costs without LoRAs (peft's unfused layers add work to every step); the touched base tensors are
kept (in RAM) and put back exactly when the set or a weight changes, or a job has no LoRA — so
weight 0 and removal give the base output bit-exactly. The fused set stays between jobs: the
same LoRAs again cost nothing, and on the CPU the last set's fused tensors are kept after a
restore, so alternating jobs with and without it swap tensors. Only the weights changing (the same
LoRAs in the same order) adds the difference to the fused tensors in place (LoraState.reweigh),
re-fusing from the kept base every MAX_DELTA_STEPS changes so rounding never piles up. A quantized or offloaded
checkpoint keeps the unfused adapters (bnb weights cannot take a delta; offload hooks own the
weights). A LoRA that cannot apply (unknown, another architecture, keys that match nothing) is
refused by name.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass

from modules.errors import AtelierError, InvalidRequest, NotFound
from modules.models.registry import ModelEntry

log = logging.getLogger("atelier.models")

MAX_LOADED_ADAPTERS = 12
FUSED_SETS_KEPT = 1  # fused sets whose tensors stay in RAM after a restore (see LoraState)
MAX_DELTA_STEPS = 8  # weight changes added in place before the next one re-fuses from the base (float drift)
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
    """The adapters loaded into one checkpoint's pipeline, most recently used last, and the set fused now.

    On the CPU the fused tensors of the last set are kept after a restore (FUSED_SETS_KEPT), so jobs that
    alternate between that set and none — or come back to it — swap tensors instead of computing again;
    the cost is one more copy of the touched weights in RAM. A new set or weight is computed once."""

    def __init__(self):
        self.order: list[str] = []
        self.fused: tuple[tuple[str, float], ...] = ()  # (adapter, weight) fused into the weights now
        self.backup: dict = {}  # peft layer -> its base weight before fusing (on the CPU)
        self.kept: OrderedDict = OrderedDict()  # fused set -> ({peft layer: fused weight}, its delta steps), CPU only
        self.steps = 0  # weight changes added in place to the fused tensors since they were computed from the base
        self.unfused_active = False  # the unfused adapters (offload / quantized path) may be enabled
        self._layers: list | None = None  # the pipeline's peft layers, found once per set of loaded adapters

    def layers(self, pipe) -> list:
        from peft.tuners.tuners_utils import BaseTunerLayer

        if self._layers is None:
            self._layers = [m for c in _lora_components(pipe) for m in c.modules() if isinstance(m, BaseTunerLayer)]
        return self._layers

    def fuse(self, pipe, names: list[str], weights: list[float]) -> None:
        """Merge the active adapters into their layers' weights, keeping each original weight tensor.

        Written here rather than diffusers' `fuse_lora` (which adds in place, so an exact restore needs a full
        copy first and a second pass back): on the CPU the fused weight is a new tensor and the original is
        kept as it is, so restoring is a pointer swap; on a GPU the original is copied to RAM (no second copy
        of the weights in VRAM) and the delta added in place. A plain LoRA Linear is fused with one addmm
        (W + s·B·A, no separate delta tensor); other layer types through peft's get_delta_weight."""
        import torch

        key = tuple(zip(names, weights))
        kept, self.steps = self.kept.pop(key, (None, 0))
        self.kept.clear()  # never three copies of the touched weights: the one kept set goes before a new one
        with torch.no_grad():
            for module in self.layers(pipe):
                active = [n for n in names if n in module.lora_A]
                if not active:
                    continue
                weight = module.get_base_layer().weight
                if kept is not None and module in kept and weight.device.type == "cpu":
                    fused = kept[module]
                else:
                    for name, w in zip(names, weights):
                        if name in active:
                            module.set_scale(name, w)  # what set_adapters would set, for this layer only
                    fused = _fused_weight(module, weight, active)
                self.backup[module] = weight.data if weight.device.type == "cpu" else weight.data.to("cpu", copy=True)
                if fused is not None:  # None: added in place (a GPU)
                    weight.data = fused
                module.enable_adapters(True)  # peft unmerges a merged layer whose adapters are disabled
                module.merged_adapters.extend(active)  # peft's forward now uses the base layer alone
        self.fused = key

    def unfuse(self, pipe) -> None:
        """Back to the base weights, bit-exactly, and peft told that nothing is merged."""
        if not self.fused:
            return
        import torch

        kept = {}
        with torch.no_grad():
            for module, original in self.backup.items():
                weight = module.get_base_layer().weight
                if original.device == weight.device and original.device.type == "cpu":
                    kept[module] = weight.data
                    weight.data = original
                else:  # a GPU, or the model moved since fusing: copy back where the weight lives now
                    weight.data.copy_(original.to(weight.device))
                module.merged_adapters.clear()
                module.enable_adapters(False)  # unmerged adapters would otherwise act, unfused, on the next step
        if kept and len(kept) == len(self.backup) and FUSED_SETS_KEPT:
            self.kept[self.fused] = (kept, self.steps)
        self.backup, self.fused, self.steps = {}, (), 0

    def reweigh(self, pipe, names: list[str], weights: list[float]) -> bool:
        """The same adapters (names and order) fused now, other weights: add (new - old)·scaling·B·A to each
        fused weight in place — one addmm per layer instead of a restore and a new fuse. The base tensors in
        `backup` are not touched, so a restore stays exact. False (nothing changed) where it does not apply:
        another set, a GPU or non-fp32 weight, DoRA (not linear in the scale), a fused tensor that is its
        backup, or MAX_DELTA_STEPS changes already added (the caller then re-fuses from the base)."""
        import torch

        old = dict(self.fused)
        if [n for n, _ in self.fused] != list(names) or self.steps >= MAX_DELTA_STEPS or 0.0 in weights:
            return False
        changes = [(n, w) for n, w in zip(names, weights) if w != old[n]]
        todo = []
        for module in self.layers(pipe):
            active = [n for n, _ in changes if n in module.lora_A]
            if not active:
                continue
            weight = module.get_base_layer().weight
            base = self.backup.get(module)
            if (base is None or weight.device.type != "cpu" or weight.dtype != torch.float32
                    or weight.data.data_ptr() == base.data_ptr() or any(module.use_dora.get(n) for n in active)):
                return False
            todo.append((module, weight, active))
        # A kept set whose tensors are these (none is, while a set is fused: fuse() empties `kept`) would go stale.
        live = {w.data.data_ptr() for _, w, _ in todo}
        self.kept = OrderedDict((k, v) for k, v in self.kept.items()
                                if not any(t.data_ptr() in live for t in v[0].values()))
        new = dict(changes)
        with torch.no_grad():
            for module, weight, active in todo:
                for name in active:
                    before = module.scaling[name]
                    module.set_scale(name, new[name])  # peft's bookkeeping, as fuse() sets it
                    _add_delta(module, weight.data, name, module.scaling[name] - before)
        self.fused = tuple(zip(names, weights))
        self.steps += 1
        return True

    def ensure(self, pipe, entry: ModelEntry) -> str:
        name = adapter_name(entry)
        if name in self.order and name in _loaded_names(pipe):
            self.order.remove(name)
        else:
            _load(pipe, entry, name)
            self._layers = None
            pipe.disable_lora()  # diffusers activates a newly loaded adapter: off until a set asks for it
        self.order.append(name)
        return name

    def evict(self, pipe, keep: set[str]) -> None:
        while len(self.order) > MAX_LOADED_ADAPTERS:
            victim = next((n for n in self.order if n not in keep), None)
            if victim is None:
                return
            self.order.remove(victim)
            self._layers = None
            self.kept = OrderedDict((k, v) for k, v in self.kept.items() if victim not in dict(k))
            with contextlib.suppress(Exception):
                pipe.delete_adapters([victim])


def _fused_weight(module, weight, active: list[str]):
    """The fused weight as a new tensor on the CPU; elsewhere the delta is added in place and None returned."""
    import torch
    from peft.tuners.lora import Linear as LoraLinear

    on_cpu = weight.device.type == "cpu"
    base = weight.data
    out = None if on_cpu else base
    for name in active:
        a, b = module.lora_A[name], module.lora_B[name]
        plain = (isinstance(module, LoraLinear) and isinstance(a, torch.nn.Linear) and not module.fan_in_fan_out
                 and not module.use_dora.get(name) and not module.lora_bias.get(name)
                 and a.weight.dtype == b.weight.dtype == base.dtype and (not on_cpu or base.dtype == torch.float32))
        if plain:  # W + s·(B @ A) in one op
            if out is None:
                out = torch.addmm(base, b.weight, a.weight, alpha=module.scaling[name])
            else:
                out.addmm_(b.weight, a.weight, alpha=module.scaling[name])
        else:
            delta = module.get_delta_weight(name).to(base.dtype)
            out = base + delta if out is None else out.add_(delta)
    return out if on_cpu else None


def _add_delta(module, weight, name: str, ds: float) -> None:
    """weight += ds·(B @ A) in place: ds the change of the adapter's scaling (peft's delta is linear in it)."""
    import torch
    from peft.tuners.lora import Linear as LoraLinear

    a, b = module.lora_A[name], module.lora_B[name]
    if (isinstance(module, LoraLinear) and isinstance(a, torch.nn.Linear) and not module.fan_in_fan_out
            and not module.lora_bias.get(name) and a.weight.dtype == b.weight.dtype == weight.dtype):
        weight.addmm_(b.weight, a.weight, alpha=ds)
    else:  # get_delta_weight is at the scaling set now: rescale it to the change
        weight.add_(module.get_delta_weight(name).to(weight.dtype), alpha=ds / module.scaling[name])


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
        state.unfused_active = True


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
    loaded = all(adapter_name(e) in state.order for e, _ in entries)  # nothing to load into a merged model
    if state.fused == tuple(zip(names, weights)) and fuse:
        pass
    elif fuse and loaded and names and state.reweigh(pipe, names, weights):
        pass  # only the weights changed: the difference added in place
    else:
        state.unfuse(pipe)  # before loading more adapters: peft would unmerge (inexactly) on its own
    for entry, _ in entries:
        state.ensure(pipe, entry)
    state.evict(pipe, set(names))
    try:
        try:
            if fuse and names and not state.fused:
                state.fuse(pipe, names, weights)
            elif not fuse and names:
                pipe.enable_lora()
                pipe.set_adapters(names, adapter_weights=weights)
                state.unfused_active = True
        except Exception as exc:  # the adapters loaded but cannot be combined: name them, not a 500
            state.unfuse(pipe)
            listed = ", ".join(e.stem for e, _ in entries)
            raise InvalidRequest(f"LoRAs {listed} could not be activated together: {type(exc).__name__}: "
                                 f"{str(exc)[:300]}", "prompt") from None
        yield [AppliedLora(entry, weight) for entry, weight in entries]
    finally:
        if state.unfused_active:
            pipe.disable_lora()  # unfused adapters stay off outside the job: the base output, bit-exact
            state.unfused_active = False
