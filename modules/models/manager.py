"""What is in memory and where: the one place that loads, moves and evicts models of every kind.

Jobs ask `with manager.use(kind, name, options) as handle:` and get the model resident on
the compute device and pinned: a pinned model is never moved or evicted. Each device has
one memory budget (settings `gpu_budget_gb`, `ram_budget_gb`). Loading a model that does not
fit evicts the least recently used idle models — from the GPU to the RAM cache first, then
out — so an SD checkpoint and a chat model stay resident together when they fit, and a job
whose model cannot fit next to models in use waits for them (never an out-of-memory crash).
Kinds are adapters (adapters.py); a kind may limit its own residency (A1111's checkpoint
cache: one checkpoint on the device, `sd_checkpoints_limit` in RAM).

Several devices (`--device cuda` on a machine with several GPUs) are one pool under this one
manager: a model is in memory once, on one device (its slot's `lane`) or in the RAM cache, and
each device has its own budget. A job worker binds its thread to its device (`on_device`); a job
that asks for a model resident on another device waits for it to be released there and then
moves it (never a second copy). The job engine sends a job to the device that holds its model
(`lane_of`), so that move is rare.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

from modules.devices import DeviceChoice, free_accelerator_memory
from modules.errors import AtelierError, Busy, NotFound
from modules.models.adapters import AdapterContext, Loaded, ModelAdapter
from modules.models.quant import LoadOptions, OptionsStore
from modules.models.registry import ModelEntry, ModelRegistry
from modules.settings import SettingsStore
from pydantic import BaseModel, Field

log = logging.getLogger("atelier.models")

WAIT_FOR_ROOM_S = 600.0  # a job waits this long for models in use to be released before it gives up
GPU_HEADROOM_BYTES = int(1.5 * 1024**3)  # activations and the CUDA context need room beside the weights
AUTO_RAM_FRACTION = 0.75


class ModelSettings(BaseModel):
    """The model manager's settings section (tasks.models in config.json)."""

    ram_budget_gb: float = Field(0.0, ge=0.0, le=65536.0,
                                 description="RAM the model manager may fill with models, GiB (0: 75% of the machine's)")
    gpu_budget_gb: float = Field(0.0, ge=0.0, le=65536.0,
                                 description="GPU memory the model manager may fill, GiB (0: all but 1.5 GiB)")


SETTINGS_SECTION = "models"


@dataclass
class Slot:
    """One resident model: what is loaded, who holds it, when it was last used."""

    loaded: Loaded
    lane: str | None = None  # the pool device its weights are on (DeviceChoice.lane); None: in the RAM cache
    lock: threading.RLock = field(default_factory=threading.RLock)  # one job at a time uses a model's state
    holders: collections.Counter = field(default_factory=collections.Counter)  # thread id -> pins
    last_used: float = field(default_factory=time.monotonic)

    @property
    def pinned(self) -> bool:
        return sum(self.holders.values()) > 0


class ModelManager:
    def __init__(self, registry: ModelRegistry, settings: SettingsStore, device: DeviceChoice | None = None):
        self.registry = registry
        self.settings = settings
        settings.add_section(SETTINGS_SECTION, ModelSettings)
        self.devices: list[DeviceChoice] = [device or DeviceChoice("cpu", "float32")]  # the pool, first = default
        self._bound = threading.local()  # .lane: the device a job worker's thread works on
        self.options = OptionsStore(registry.paths.root / "model-options.json")
        self._adapters: dict[str, ModelAdapter] = {}
        self._slots: collections.OrderedDict[tuple[str, str], Slot] = collections.OrderedDict()  # LRU first
        self._cond = threading.Condition()  # guards _slots and the pins
        self._place_lock = threading.Lock()  # one placement decision (load / move / evict) at a time
        self._chosen: dict[str, str] = {}  # kind -> the last name loaded by choice (not a per-request override)
        self._active: dict[str, tuple[str, str]] = {}  # kind -> key of the one used last
        self._release_listeners: list = []  # fn(loaded): a model was unloaded or moved off its device
        self.last_switch_seconds: float | None = None

    # -- set-up ----------------------------------------------------------------
    def attach(self, device: DeviceChoice, *more: DeviceChoice) -> None:
        """The compute device(s), once torch has chosen them (start-up's heavy part)."""
        self.devices = [device, *more]

    @property
    def device(self) -> DeviceChoice:
        """The first (or only) device: where work not bound to a device runs (chat, vision, training)."""
        return self.devices[0]

    @contextlib.contextmanager
    def on_device(self, lane: str):
        """The calling thread's models are placed on the pool device `lane` for the block (a job worker's)."""
        before = getattr(self._bound, "lane", None)
        self._bound.lane = lane
        try:
            yield
        finally:
            self._bound.lane = before

    def _here(self) -> DeviceChoice:
        """The device the calling thread works on: its bound one, else the first."""
        lane = getattr(self._bound, "lane", None)
        return self._device_of(lane) if lane is not None else self.devices[0]

    def _device_of(self, lane: str) -> DeviceChoice:
        for d in self.devices:
            if d.lane == lane:
                return d
        raise NotFound(f"no device {lane!r}; devices: {', '.join(d.lane for d in self.devices)}", "device")

    def add_adapter(self, kind: str, adapter: ModelAdapter) -> None:
        self._adapters[kind] = adapter

    def add_release_listener(self, fn) -> None:
        """`fn(loaded)` is called when a model is unloaded or moved to another device (what a task
        keeps about that copy of the weights — a chat's KV cache — is stale then)."""
        self._release_listeners.append(fn)

    def _released(self, loaded: Loaded) -> None:
        for fn in list(self._release_listeners):
            try:
                fn(loaded)
            except Exception:  # a listener must never stop an eviction
                log.exception("a model release listener raised")

    def remove_adapter(self, kind: str) -> None:
        for slot in [s for s in self._slots_list() if s.loaded.kind == kind and not s.pinned]:
            self._drop(slot)
        self._adapters.pop(kind, None)

    def kinds(self) -> list[str]:
        return list(self._adapters)

    @property
    def _actx(self) -> AdapterContext:
        return self._actx_for(self._here())

    def _actx_for(self, device: DeviceChoice) -> AdapterContext:
        return AdapterContext(self.registry, self.settings, device)

    def _adapter(self, kind: str) -> ModelAdapter:
        if kind not in self._adapters:
            raise NotFound(f"no loader for models of kind {kind!r}; loadable kinds: {', '.join(self._adapters)}", "kind")
        return self._adapters[kind]

    # -- which model ------------------------------------------------------------
    def default_name(self, kind: str) -> str:
        wanted = (self.settings.get().sd_model_checkpoint if kind == "checkpoint" else "") or self._chosen.get(kind)
        if wanted:
            return wanted
        entries = [e for e in self.registry.list(kind) if not e.problem]
        if not entries:
            folder = self.registry.paths.model_dir(kind).name
            raise NotFound(f"no {kind} model in models/{folder}; add one and press Refresh",
                           "sd_model_checkpoint" if kind == "checkpoint" else "model")
        return entries[0].name

    def default_checkpoint_name(self) -> str:
        return self.default_name("checkpoint")

    def _entry(self, kind: str, name: str | None) -> ModelEntry:
        return self.registry.get(kind, name or self.default_name(kind))

    def model_key(self, kind: str, name: str | None = None) -> tuple[str, str] | None:
        """What identifies `name` (default: the default one) of `kind` in memory; None when there is none."""
        try:
            return (kind, str(self._entry(kind, name).path))
        except AtelierError:
            return None

    def holding(self, lane: str) -> int:
        """How many models are resident on the pool device `lane`."""
        return sum(1 for s in self._slots_list() if s.lane == lane)

    def lane_of(self, key: tuple[str, str]) -> str | None:
        """The pool device a model (its `model_key`) is resident on; None when it is not on one."""
        with self._cond:
            slot = self._slots.get(key)
            return slot.lane if slot is not None else None

    # -- using a model ------------------------------------------------------------
    @contextlib.contextmanager
    def use(self, kind: str, name: str | None = None, options: LoadOptions | None = None):
        """The model, resident on the compute device and pinned for the block; yields its handle."""
        entry = self._entry(kind, name)
        slot = self._acquire(kind, entry, options or self.options.get(entry.name))
        try:
            with slot.lock:  # one job at a time works with a model's state (LoRAs, scheduler, cache)
                self._adapter(kind).prepare(self._actx, slot.loaded)
                yield slot.loaded.handle
        finally:
            self._release(slot)

    def load(self, name: str | None = None, options: LoadOptions | None = None, remember: bool = True,
             kind: str = "checkpoint"):
        """Make `name` (default: the settings' or last chosen) resident and the active one of its kind."""
        if name and remember:
            self._chosen[kind] = self._entry(kind, name).name
        with self.use(kind, name, options) as handle:
            return handle

    def checkpoint(self, name: str | None = None, modules: tuple[str, ...] | None = None):
        """`with manager.checkpoint(override) as ckpt:` — the SD checkpoint for one job; `modules` (Forge's
        forge_additional_modules) replaces the remembered options' choice of shared text encoder / VAE files."""
        if modules is None:
            return self.use("checkpoint", name)
        entry = self._entry("checkpoint", name)
        return self.use("checkpoint", entry.name, self.options.get(entry.name).model_copy(update={"modules": modules}))

    @property
    def active(self):
        """The SD checkpoint used last (what A1111 calls the loaded model), or None."""
        return self.active_of("checkpoint")

    def active_of(self, kind: str):
        key = self._active.get(kind)
        slot = self._slots.get(key) if key else None
        return slot.loaded.handle if slot else None

    def resident(self) -> list[Loaded]:
        return [s.loaded for s in self._slots_list()]

    def _slots_list(self) -> list[Slot]:
        with self._cond:
            return list(self._slots.values())

    # -- placement ------------------------------------------------------------------
    def _acquire(self, kind: str, entry: ModelEntry, opts: LoadOptions) -> Slot:
        deadline = time.monotonic() + WAIT_FOR_ROOM_S
        while True:
            with self._place_lock:
                slot = self._try_place(kind, entry, opts)
            if slot is not None:
                return slot
            with self._cond:  # models in use stand in the way: wait until one is released
                if time.monotonic() > deadline:
                    raise Busy(f"{entry.name} does not fit in memory next to the models in use; "
                               "try again when the running jobs finish, or raise the memory budget", "model")
                self._cond.wait(1.0)

    def _try_place(self, kind: str, entry: ModelEntry, opts: LoadOptions) -> Slot | None:
        """Resident on this thread's device and pinned, or None when models in use must be released first."""
        adapter = self._adapter(kind)
        here = self._here()
        key = (kind, str(entry.path))
        start = time.perf_counter()
        slot = self._slots.get(key)
        if slot is not None and slot.loaded.options != opts:
            if slot.pinned:
                return None  # in use with other options: swap once it is released
            self._drop(slot)  # hot swap of dtype / quantization: the old copy goes first
            slot = None
        if slot is None:
            estimate = _estimate_bytes(entry, opts)
            if not self._make_room(here.lane, estimate, key, kind):
                return None
            loaded = adapter.load(self._actx_for(here), entry, opts)  # may raise: nothing resident has changed
            slot = Slot(loaded, lane=here.lane)
            with self._cond:
                self._slots[key] = slot
            log.info("%s %s loaded on %s (%.0f MiB)", kind, entry.name, _location(slot), loaded.footprint / 2**20)
        elif slot.lane != here.lane:
            if slot.lane is not None and self._held_by_others(slot):
                return None  # in use on another device: it comes here once released (never a second copy)
            if not self._make_room(here.lane, slot.loaded.footprint, key, kind):
                return None
            came_from = slot.lane or "the RAM cache"
            before = slot.loaded.device
            if before != here.name:
                adapter.to(self._actx_for(here), slot.loaded, here.name)
                if before != "cpu":
                    free_accelerator_memory(before)
            slot.lane = here.lane
            log.info("%s %s moved from %s to %s", kind, entry.name, came_from, _location(slot))
        with self._cond:
            slot.holders[threading.get_ident()] += 1
            slot.last_used = time.monotonic()
            self._slots.move_to_end(key)
            self._active[kind] = key
        # The real footprint may exceed the estimate, and the budget may have shrunk: idle ones make room.
        self._make_room(here.lane, 0, key, kind)
        self._trim_kind(kind, key)  # the active one changed: the kind's cache limits apply again
        self.last_switch_seconds = time.perf_counter() - start
        return slot

    @staticmethod
    def _held_by_others(slot: Slot) -> bool:
        return bool(set(slot.holders) - {threading.get_ident()})

    def _release(self, slot: Slot) -> None:
        with self._cond:
            me = threading.get_ident()
            slot.holders[me] -= 1
            if slot.holders[me] <= 0:
                del slot.holders[me]
            slot.last_used = time.monotonic()
            self._cond.notify_all()

    def _torch_name(self, lane: str) -> str:
        """The torch device behind a pool device ("cpu:1" of a simulated pool is the CPU); "cpu" is the RAM tier."""
        for d in self.devices:
            if d.lane == lane:
                return d.name
        return lane

    def budget(self, device_name: str) -> int:
        """Bytes of weights the manager may keep on `device_name` (a pool device, or "cpu": the RAM tier);
        `gpu_budget_gb` applies to each GPU."""
        import psutil

        s = self.settings.section(SETTINGS_SECTION)
        torch_name = self._torch_name(device_name)
        if torch_name == "cpu":
            return int(s.ram_budget_gb * 1024**3) or int(psutil.virtual_memory().total * AUTO_RAM_FRACTION)
        if s.gpu_budget_gb:
            return int(s.gpu_budget_gb * 1024**3)
        from modules.devices import device_total_memory

        return max(0, device_total_memory(torch_name) - GPU_HEADROOM_BYTES)

    def used(self, device_name: str) -> int:
        """Bytes of weights on a pool device; for "cpu", everything in RAM (parked ones and CPU devices')."""
        if device_name == "cpu":
            return sum(s.loaded.footprint for s in self._slots_list() if s.loaded.device == "cpu")
        return sum(s.loaded.footprint for s in self._slots_list() if s.lane == device_name)

    def _make_room(self, device_name: str, need: int, keep: tuple[str, str], kind: str) -> bool:
        """Evict idle models (LRU first) until `need` more bytes fit; False when models in use stand in the way."""
        limit = self._adapter(kind).residency(self.settings.get()).get("max_on_device")
        same_kind = [s for s in self._slots_list() if s.loaded.kind == kind and s.lane == device_name
                     and s.loaded.key != keep]
        if limit is not None and self._torch_name(device_name) != "cpu" and len(same_kind) >= limit:
            for slot in same_kind[:len(same_kind) - limit + 1]:
                if slot.pinned:
                    return False
                self._evict(slot)
        budget = self.budget(device_name)
        for slot in self._slots_list():
            if self.used(device_name) + need <= budget:
                return True
            if slot.lane == device_name and slot.loaded.key != keep and not slot.pinned:
                self._evict(slot)
        if self.used(device_name) + need <= budget:
            return True
        mine = threading.get_ident()
        blocking = [s for s in self._slots_list() if s.lane == device_name and s.pinned
                    and s.loaded.key != keep and set(s.holders) - {mine}]
        if blocking:
            return False
        # Nothing idle is left: a model larger than the budget still loads (its memory policy offloads it).
        log.warning("%s: %.0f MiB asked for, %.0f MiB budget; loading anyway", device_name, need / 2**20,
                    budget / 2**20)
        return True

    def _evict(self, slot: Slot) -> None:
        """An idle model leaves the device: to the RAM cache when it can move and fits, else out."""
        loaded = slot.loaded
        if loaded.device != "cpu" and loaded.movable and self._room_in_ram(loaded):
            self._released(loaded)
            before = loaded.device
            self._adapter(loaded.kind).to(self._actx, loaded, "cpu")
            slot.lane = None
            log.info("%s %s moved to the RAM cache", loaded.kind, loaded.entry.name)
            free_accelerator_memory(before)
            self._trim_kind(loaded.kind, None)
        else:
            self._drop(slot)

    def _room_in_ram(self, loaded: Loaded) -> bool:
        residency = self._adapter(loaded.kind).residency(self.settings.get())
        if residency.get("max_resident") is not None and residency["max_resident"] <= 1:
            return False
        cap = residency.get("max_parked_bytes")
        if cap is not None and loaded.footprint > cap:
            return False
        return self._make_room_cpu(loaded.footprint, loaded.key)

    def _make_room_cpu(self, need: int, keep: tuple[str, str]) -> bool:
        budget = self.budget("cpu")
        for slot in self._slots_list():
            if self.used("cpu") + need <= budget:
                return True
            if slot.loaded.device == "cpu" and slot.loaded.key != keep and not slot.pinned:
                self._drop(slot)
        return self.used("cpu") + need <= budget

    def _trim_kind(self, kind: str, keep: tuple[str, str] | None) -> None:
        """A kind's own residency limits (A1111: sd_checkpoints_limit, sd_checkpoint_cache_gb)."""
        if kind not in self._adapters:
            return
        residency = self._adapters[kind].residency(self.settings.get())
        count, parked_cap = residency.get("max_resident"), residency.get("max_parked_bytes")
        while True:
            mine = [s for s in self._slots_list() if s.loaded.kind == kind]
            parked = [s for s in mine if s.loaded.key != self._active.get(kind)]
            too_many = count is not None and len(mine) > count
            too_big = parked_cap is not None and sum(s.loaded.footprint for s in parked) > parked_cap
            idle = [s for s in parked if not s.pinned and s.loaded.key != keep]
            if not (too_many or too_big) or not idle:
                return
            self._drop(idle[0])

    def _drop(self, slot: Slot) -> None:
        loaded = slot.loaded
        with self._cond:
            self._slots.pop(loaded.key, None)
            if self._active.get(loaded.kind) == loaded.key:
                del self._active[loaded.kind]
        self._released(loaded)
        self._adapter(loaded.kind).release(self._actx, loaded)
        log.info("%s %s unloaded", loaded.kind, loaded.entry.name)
        device_name = loaded.device
        del slot, loaded
        if device_name != "cpu":  # RAM: reference counting frees the weights (a full gc.collect costs ~0.5 s
            free_accelerator_memory(device_name)  # in a studio's heap, a third of a cold switch); a GPU's cache needs it

    # -- the Models tab and REST ---------------------------------------------------------
    def describe(self) -> list[dict]:
        """Every model on disk, with where it is now and its footprint when loaded."""
        from modules.models.demo import is_demo

        resident = {s.loaded.key: s for s in self._slots_list()}
        rows = []
        for kind in self.registry.paths.model_kinds():
            for e in self.registry.list(kind):
                slot = resident.get((kind, str(e.path)))
                loaded = slot.loaded if slot else None
                opts = loaded.options if loaded else self.options.get(e.name)
                rows.append({
                    "kind": kind, "name": e.name, "size": e.size, "arch": e.arch, "format": e.format,
                    "short_hash": e.short_hash, "location": _location(slot) if slot else "disk",
                    "active": bool(loaded is not None and self._active.get(kind) == loaded.key),
                    "in_use": bool(slot and slot.pinned),
                    "footprint_bytes": loaded.footprint if loaded else 0,
                    "quantization": opts.label()  # else a file's own: a GGUF type, Forge's pre-quantized nf4
                    or (e.metadata.get("quantization") if e.format in ("gguf", "safetensors") else None),
                    "t5": opts.t5,  # Flux / SD3: T5's storage (t5_storage.py)
                    "loadable": kind in self._adapters,
                    "demo": e.path.is_dir() and is_demo(e.path),  # random weights: the UI says so
                })
        return rows

    def budgets(self) -> list[dict]:
        """The memory gauge per device: budget and what resident models use of it."""
        devices = ["cpu"] + [d.lane for d in self.devices if d.lane != "cpu"]
        return [{"device": d, "budget_bytes": self.budget(d), "used_bytes": self.used(d)} for d in devices]

    def unload(self, name: str | None = None, kind: str | None = None) -> None:
        """Drop one model (`name` of `kind`, default a checkpoint) from the device and the RAM cache; with no
        name, every idle model (of `kind`, or of every kind). A named model a job is using is refused."""
        if name is not None:
            key = (kind or "checkpoint", str(self.registry.get(kind or "checkpoint", name).path))
            targets = [s for s in self._slots_list() if s.loaded.key == key]
        else:
            targets = [s for s in self._slots_list() if kind in (None, s.loaded.kind) and not s.pinned]
        with self._place_lock:
            for slot in targets:
                if slot.pinned:
                    raise Busy(f"{slot.loaded.entry.name} is in use by a running job; unload it when that finishes",
                               "name")
                self._drop(slot)

    def vacate_device(self) -> None:
        """Every idle model leaves the compute device (to the RAM cache when it fits there): a training
        process is about to own the device."""
        with self._place_lock:
            for slot in self._slots_list():
                if slot.lane is not None and slot.loaded.device != "cpu" and not slot.pinned:
                    self._evict(slot)
        for device in self.devices:
            if device.name != "cpu":
                free_accelerator_memory(device.name)

    def memory(self) -> dict:
        from modules.devices import memory_readings

        return memory_readings(self.device.name)

    def set_options(self, name: str, options: LoadOptions | dict, kind: str = "checkpoint") -> None:
        """Remember per-model load options (dtype, quantization); used on the next load of it."""
        entry = self.registry.get(kind, name)
        self.options.set(entry.name, options)

    # -- SD per-job helpers (the diffusion task's; kept here because they move weights) ----------
    def loras(self, ckpt, wanted: list[tuple[str, float]]):
        """`with manager.loras(ckpt, [(name, weight)]) as applied:` — see modules/models/lora.py."""
        from modules.models import lora

        return lora.applied(self.registry, ckpt, wanted)

    def retry_on_oom(self, ckpt, fn):
        """Call fn(); on out-of-memory free caches, move the checkpoint to the next lighter policy, retry once
        (memory.retry_on_oom; the move is the manager's: it owns the slot and the checkpoint adapter)."""
        from modules.models import lora, memory

        here = self._here().name
        slot = self._slots.get(("checkpoint", str(ckpt.entry.path)))

        def move_to(policy: str) -> None:
            lora.unfuse_keeping_active(ckpt)  # offload hooks take the weights over: no fused deltas under them
            self._adapters["checkpoint"].apply_policy(slot.loaded, policy, here)

        return memory.retry_on_oom(ckpt, fn, here, move_to if slot is not None else None)

    # -- start-up ----------------------------------------------------------------------
    def load_at_start(self):
        """The settings' checkpoint; when that one is gone or broken, the first that loads (as A1111 falls back)."""
        try:
            return self.load()
        except AtelierError as exc:
            wanted = self.settings.get().sd_model_checkpoint
            others = [e for e in self.registry.list("checkpoint") if e.name != wanted and not e.problem]
            if not wanted or not others:
                raise
            log.warning("checkpoint %r could not be loaded (%s); falling back to %s", wanted, exc.message, others[0].name)
            self.settings.update({"sd_model_checkpoint": others[0].name}, save=False)  # config.json keeps the user's
            return self.load(others[0].name)


def _estimate_bytes(entry: ModelEntry, opts: LoadOptions) -> int:
    """Weights in memory before loading them: the files' size, scaled by the quantization asked for (a file
    quantized already — GGUF, Forge's nf4 — stays about its size)."""
    if entry.metadata.get("quantization"):
        return entry.size
    scale = {"none": 1.0, "int8": 0.55, "nf4": 0.35, "fp4": 0.35}[opts.quantization]
    return int(entry.size * scale)


def _location(slot: Slot) -> str:
    """Where a model is, as the Models tab shows it: its pool device ("cuda:1", "cpu:1"), else its torch device."""
    loaded = slot.loaded
    if slot.lane is None or slot.lane == loaded.device:
        return loaded.location
    return slot.lane + loaded.location_note


def describe_error(exc: BaseException) -> str:
    return exc.message if isinstance(exc, AtelierError) else f"{type(exc).__name__}: {exc}"
