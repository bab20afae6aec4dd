"""Same-architecture checkpoint switches: keep an empty module skeleton, load only the weights.

Most of a cold diffusers load is fixed cost — reading configs, building thousands of modules,
the tokenizer, the loading machinery — not the reading of the weights. As A1111 does for
same-architecture switches, the first load of an architecture goes the ordinary way, and an
empty copy of the result is kept: every parameter and persistent buffer on the meta device
(no memory), everything else (configs, tokenizer, scheduler, non-persistent buffers such as
position ids) as loaded. A later diffusers folder whose non-weight files (configs, tokenizer,
scheduler) are byte-identical gets a copy of that skeleton with its own files' tensors
assigned (the checks of `load_state_dict(strict=True, assign=True)`, in one pass: `_assign`). Anything unusual — a missing or extra
key, a shape that differs, a sharded or variant file, quantization at load — goes the
ordinary way, so the skeleton path never differs from a cold load (checked tensor by tensor
when the skeleton is made: a library that renames or rewrites a weight on load disables it).
Copying the skeleton (tens of thousands of Python objects, ~0.3 s for SD1.5) happens ahead, in a
background thread started once a switch is done (make_spares), so the next switch finds a spare copy
ready and this one does not share the CPU with the copy. SD1 single files use the same skeletons
through a reader that converts their LDM key names (skeleton_file.py).
"""
from __future__ import annotations

import copy
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("atelier.models")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".h5", ".gguf")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
MAX_SKELETONS = 4  # one per architecture in use; each holds configs and a tokenizer, no weights


@dataclass
class Skeleton:
    key: str  # its config fingerprint
    pipe: object  # the pipeline with every weight on the meta device
    arch: str
    files: dict  # component -> (weight file name, prefix added to its keys); empty for a single file
    reader: object = None  # single files: (path, pipe) -> {component: state dict}, skeleton_file.ldm_states
    keys: dict | None = None  # single files: component -> the keys _assign takes (the file's others are dropped)


def config_fingerprint(folder: Path, dtype) -> str:
    """What makes two diffusers folders build the same modules: model_index.json and every file of the
    component folders but the weights (configs, tokenizer, scheduler), and the dtype."""
    digest = hashlib.sha256(str(dtype).encode())
    files = [folder / "model_index.json", *(p for p in folder.glob("*/**/*") if p.is_file())]
    for path in sorted(files):
        rel = path.relative_to(folder).as_posix()
        if path.suffix in WEIGHT_SUFFIXES or path.name.endswith(".index.json"):
            digest.update(b"w:" + rel.encode())  # a weight file's name counts (sharded vs single), not its bytes
            continue
        digest.update(b"f:" + rel.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _modules(pipe) -> dict:
    import torch

    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def _own_keys(module) -> set[str]:
    """The keys `_assign` reads from a file: a tensor tied under two names (T5's `shared.weight` and
    `encoder.embed_tokens.weight`) counts once, under its first name, as the library saves it."""
    keys, seen = set(), set()
    for prefix, sub in module.named_modules():
        dot = prefix + "." if prefix else ""
        for table, skip in ((sub._parameters, ()), (sub._buffers, sub._non_persistent_buffers_set)):
            for k, t in table.items():
                if t is not None and k not in skip and id(t) not in seen:
                    seen.add(id(t))
                    keys.add(dot + k)
    return keys


def _key_prefix(module_keys: set[str], file_keys: set[str]) -> str | None:
    """The prefix the library adds to the file's keys (transformers 5 saves CLIP without `text_model.`)."""
    if module_keys == file_keys:
        return ""
    for prefix in {k.split(".", 1)[0] + "." for k in module_keys}:
        if {prefix + k for k in file_keys} == module_keys:
            return prefix
    return None


def _read(path: Path, prefix: str) -> dict:
    from safetensors.torch import load_file

    return {prefix + k: v for k, v in load_file(str(path)).items()}


def _emptied(pipe):
    """A deep copy of `pipe` whose parameters and persistent buffers are meta tensors of the same shape."""
    import torch

    memo = {}
    for module in _modules(pipe).values():
        for sub in module.modules():
            for p in sub._parameters.values():
                if p is not None and id(p) not in memo:
                    memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for name, b in sub._buffers.items():
                if b is not None and name not in sub._non_persistent_buffers_set and id(b) not in memo:
                    memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(pipe, memo)


def _assign(module, state: dict) -> None:
    """`module.load_state_dict(state, strict=True, assign=True)` in one pass over the modules: torch's filters
    the whole dict by prefix at every level (~0.2 s for an SD1.5 UNet); the checks are the same — every
    parameter and persistent buffer given, nothing extra, each shape as built, dtypes as the ordinary load's."""
    import torch

    state = dict(state)
    tied: dict[int, object] = {}  # a tensor under two names (_own_keys): the second gets the first's new one
    for prefix, sub in module.named_modules():
        dot = prefix + "." if prefix else ""
        for table, persistent in ((sub._parameters, None), (sub._buffers, sub._non_persistent_buffers_set)):
            for key, old in table.items():
                if old is None or (persistent is not None and key in persistent):
                    continue
                if id(old) in tied:
                    table[key] = tied[id(old)]
                    continue
                given = state.pop(dot + key, None)
                if given is None:
                    raise ValueError(f"missing key {dot + key}")
                if given.shape != old.shape:
                    raise ValueError(f"{dot + key}: shape {tuple(given.shape)}, built {tuple(old.shape)}")
                if given.dtype != old.dtype and given.is_floating_point():
                    given = given.to(old.dtype)
                table[key] = torch.nn.Parameter(given, requires_grad=old.requires_grad) if persistent is None else given
                tied[id(old)] = table[key]
    if state:
        raise ValueError(f"unexpected key {next(iter(state))}")


class SkeletonCache:
    """The skeletons of the architectures loaded so far, by config fingerprint (owned by the checkpoint adapter)."""

    def __init__(self, limit: int = MAX_SKELETONS):
        self._limit = limit
        self._lock = threading.Lock()
        self._by_key: OrderedDict[str, Skeleton | None] = OrderedDict()  # None: this architecture cannot use one
        self._spares: dict[str, object] = {}  # key -> a copy of its skeleton made ahead, for the next switch
        self._pending: dict[str, Skeleton] = {}  # skeletons whose spare copy make_spares() is to start

    def fingerprint(self, folder: Path, dtype) -> str | None:
        try:
            return config_fingerprint(folder, dtype)
        except OSError:
            return None

    def has(self, key: str | None) -> bool:
        with self._lock:
            return key is not None and key in self._by_key

    def build(self, key: str | None, folder: Path):
        """(pipeline, arch) for `folder` from the skeleton of `key`, or None (then the ordinary load runs)."""
        with self._lock:
            skeleton = self._by_key.get(key) if key else None
            if skeleton is not None:
                self._by_key.move_to_end(key)
        if skeleton is None:
            return None
        try:
            return self._fill(skeleton, folder)
        except Exception as exc:  # an unreadable file: the ordinary load reports it in its words
            log.info("%s: not loaded through the skeleton (%s: %s)", folder.name, type(exc).__name__, str(exc)[:200])
            return None

    def _fill(self, skeleton: Skeleton, folder: Path):
        states = {}
        if skeleton.reader is not None:  # a single file: the ordinary load drops the keys its modules lack
            states = {name: {k: v for k, v in state.items() if k in skeleton.keys[name]}
                      for name, state in skeleton.reader(folder, skeleton.pipe).items()}
        for name, (file_name, prefix) in skeleton.files.items():
            path = folder / name / file_name
            if not path.is_file():
                return None
            states[name] = _read(path, prefix)
        pipe = self._copy(skeleton)  # meta tensors: no memory is copied
        try:
            for name, module in _modules(pipe).items():
                _assign(module, states[name])
        except (RuntimeError, ValueError) as exc:  # a missing / extra key or another shape: the ordinary load decides
            log.info("%s: not loaded through the %s skeleton (%s); loading it the ordinary way",
                     folder.name, skeleton.arch.upper(), str(exc).splitlines()[0][:200])
            return None
        pipe.register_to_config(_name_or_path=str(folder))
        return pipe, skeleton.arch

    def _copy(self, skeleton: Skeleton):
        with self._lock:
            spare = self._spares.pop(skeleton.key, None)
            self._pending[skeleton.key] = skeleton
        return spare if spare is not None else copy.deepcopy(skeleton.pipe)

    def make_spares(self) -> None:
        """After a switch: copy ahead, in the background, each skeleton the switch used or made."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for skeleton in pending:
            self._make_spare(skeleton)

    def _make_spare(self, skeleton: Skeleton) -> None:
        def make():
            made = copy.deepcopy(skeleton.pipe)
            with self._lock:
                if self._by_key.get(skeleton.key) is skeleton:
                    self._spares[skeleton.key] = made

        threading.Thread(target=make, name="atelier-skeleton-copy", daemon=True).start()

    def remember(self, key: str | None, folder: Path, pipe, arch: str) -> None:
        """After an ordinary load: keep an empty copy, if the skeleton path would reproduce this load exactly."""
        if key is None or self.has(key):
            return
        self._keep(key, self._make(key, folder, pipe, arch))

    def remember_file(self, key: str | None, path: Path, pipe, arch: str, reader) -> None:
        """After an ordinary single-file load: keep an empty copy if `reader` (skeleton_file.ldm_states)
        gives exactly the tensors the ordinary load gave, every one compared."""
        import torch

        if key is None or self.has(key):
            return
        skeleton = None
        try:
            modules = _modules(pipe)
            keys = {name: _own_keys(m) for name, m in modules.items()}
            states = reader(path, pipe)
            if states.keys() == modules.keys() and all(
                    keys[name] <= state.keys() and all(torch.equal(state[k].to(t.dtype), t)
                                                       for k, t in modules[name].state_dict().items() if k in keys[name])
                    for name, state in states.items()):
                skeleton = Skeleton(key=key, pipe=_emptied(pipe), arch=arch, files={}, reader=reader, keys=keys)
            del states
        except Exception as exc:  # an unusual layout: this architecture keeps loading the ordinary way
            log.info("%s: no skeleton kept for same-architecture switches (%s)", path.name, str(exc)[:200])
        self._keep(key, skeleton)

    def _keep(self, key: str, skeleton: Skeleton | None) -> None:
        with self._lock:
            self._by_key[key] = skeleton
            while len(self._by_key) > self._limit:
                old, _ = self._by_key.popitem(last=False)
                self._spares.pop(old, None)
                self._pending.pop(old, None)
            if skeleton is not None:
                self._pending[key] = skeleton

    def _make(self, key: str, folder: Path, pipe, arch: str) -> Skeleton | None:
        import torch
        from safetensors import safe_open

        files = {}
        try:
            for name, module in _modules(pipe).items():
                found = [f for f in WEIGHT_FILES if (folder / name / f).is_file()]
                if len(found) != 1:
                    return None
                state = module.state_dict()
                with safe_open(str(folder / name / found[0]), framework="pt", device="cpu") as f:
                    prefix = _key_prefix(_own_keys(module), set(f.keys()))
                    if prefix is None:
                        return None
                    # The skeleton path must give exactly what the ordinary load gave: every tensor compared once
                    # (one at a time, so the check never holds a second copy of the checkpoint).
                    for k in f.keys():
                        if not torch.equal(f.get_tensor(k).to(state[prefix + k].dtype), state[prefix + k]):
                            return None
                files[name] = (found[0], prefix)
        except Exception as exc:  # an unusual layout: this architecture keeps loading the ordinary way
            log.info("%s: no skeleton kept for same-architecture switches (%s)", folder.name, str(exc)[:200])
            return None
        return Skeleton(key=key, pipe=_emptied(pipe), arch=arch, files=files)
