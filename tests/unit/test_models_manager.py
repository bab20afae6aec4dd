"""The model manager for every kind: models of different kinds resident together, one budget,
LRU eviction of idle models, never the one in use, hot swap of load options.

A second kind is registered as an extension would (add_model_kind with an adapter): a small
torch model saved as safetensors, loaded by the manager next to the SD demo checkpoint."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from modules.models.adapters import Loaded

DEADLINE_S = 30
MiB = 1024**2


class ToyAdapter:
    """An extension's model kind: an nn.Linear stack from a safetensors file."""

    def __init__(self):
        self.loads: list[str] = []

    def residency(self, settings) -> dict:
        return {}

    def load(self, actx, entry, options) -> Loaded:
        import torch
        from safetensors.torch import load_file

        state = load_file(str(entry.path))
        model = torch.nn.Sequential(*[torch.nn.Linear(*state[f"{i}.weight"].shape[::-1]) for i in range(len(state) // 2)])
        model.load_state_dict(state)
        model.to(options.torch_dtype(torch.float32))
        self.loads.append(entry.stem)
        footprint = sum(p.numel() * p.element_size() for p in model.parameters())
        loaded = Loaded(kind="toy", entry=entry, options=options, handle=model, footprint=footprint, device="cpu")
        self.to(actx, loaded, actx.device.name)
        return loaded

    def to(self, actx, loaded, device):
        loaded.handle.to(device)
        loaded.device = device

    def prepare(self, actx, loaded):
        pass

    def release(self, actx, loaded):
        pass


def _save_toy(path: Path, mib: int, seed: int = 0) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    side = int((mib * MiB / 4) ** 0.5)
    layer = torch.nn.Linear(side, side, bias=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"0.weight": layer.weight.data, "0.bias": layer.bias.data}, str(path))
    return path


@pytest.fixture
def studio(data_dir):
    from modules.studio import Studio, StudioOptions

    s = Studio(StudioOptions(data_dir=data_dir, device="cpu", build_demo=False))
    folder = data_dir / "models" / "Toy"
    _save_toy(folder / "small.safetensors", 2, seed=1)
    _save_toy(folder / "big.safetensors", 7, seed=2)
    adapter = ToyAdapter()
    s.extensions.set_model_kind("toy", folder)
    s.models.add_adapter("toy", adapter)
    s.load()
    assert s.load_error is None, s.load_error
    s.toy = adapter
    yield s
    s.shutdown()


def _resident(studio) -> dict:
    return {(m.kind, m.entry.stem): m for m in studio.models.resident()}


def _sd_footprint(studio) -> int:
    return _resident(studio)[("checkpoint", "atelier-demo-sd15")].footprint


def _forward(model):
    import torch

    with torch.no_grad():
        return float(model(torch.ones(1, model[0].in_features)).sum())


def test_an_sd_checkpoint_and_another_kind_stay_resident_and_alternate_without_reloading(studio):
    sd = studio.models.active
    with studio.models.use("toy", "small") as toy:
        first = _forward(toy)
    for _ in range(3):
        with studio.models.use("checkpoint") as ckpt:
            assert ckpt is sd, "the checkpoint was reloaded"
        with studio.models.use("toy", "small") as toy:
            assert _forward(toy) == first
    assert studio.toy.loads == ["small"], "the toy model was read from disk more than once"
    resident = _resident(studio)
    assert ("checkpoint", "atelier-demo-sd15") in resident and ("toy", "small") in resident
    assert studio.models.used("cpu") == sum(m.footprint for m in resident.values())


def test_under_a_budget_that_fits_one_using_the_other_evicts_the_idle_one(studio):
    budget = _sd_footprint(studio) + 4 * MiB  # the SD demo and the small toy fit; the big toy does not beside SD
    studio.settings.update_section("models", {"ram_budget_gb": budget / 1024**3}, save=False)
    with studio.models.use("toy", "small"):
        pass
    assert ("checkpoint", "atelier-demo-sd15") in _resident(studio)
    with studio.models.use("toy", "big") as big:
        assert _forward(big) == _forward(big)
    resident = _resident(studio)
    assert ("toy", "big") in resident
    assert ("checkpoint", "atelier-demo-sd15") not in resident, "the idle SD checkpoint should have been evicted"
    assert studio.models.used("cpu") <= budget
    # and back: the checkpoint is read again, the big toy (idle now) makes room
    with studio.models.use("checkpoint") as ckpt:
        assert ckpt.entry.name == "atelier-demo-sd15"
    assert ("toy", "big") not in _resident(studio)


def test_the_model_in_use_is_never_evicted_the_other_waits_for_it(studio):
    budget = _sd_footprint(studio) + 4 * MiB
    studio.settings.update_section("models", {"ram_budget_gb": budget / 1024**3}, save=False)
    holding, release, got_big = threading.Event(), threading.Event(), threading.Event()
    sd_seen_while_held = []

    def job_using_sd():
        with studio.models.use("checkpoint") as ckpt:
            holding.set()
            release.wait(DEADLINE_S)
            sd_seen_while_held.append(("checkpoint", ckpt.entry.stem) in _resident(studio))

    def job_using_big():
        with studio.models.use("toy", "big"):
            got_big.set()

    first = threading.Thread(target=job_using_sd)
    first.start()
    assert holding.wait(DEADLINE_S)
    second = threading.Thread(target=job_using_big)
    second.start()
    time.sleep(1.5)
    assert not got_big.is_set(), "the big model was placed while the checkpoint in use filled the budget"
    assert ("checkpoint", "atelier-demo-sd15") in _resident(studio)
    release.set()
    first.join(DEADLINE_S)
    second.join(DEADLINE_S)
    assert sd_seen_while_held == [True]
    assert got_big.is_set(), "the waiting job never got its model after the other was released"


def test_a_model_in_use_cannot_be_unloaded(studio):
    from modules.errors import Busy

    with studio.models.use("toy", "small"):
        with pytest.raises(Busy) as err:
            studio.models.unload("small", kind="toy")
        assert "in use" in err.value.message
    studio.models.unload("small", kind="toy")
    assert ("toy", "small") not in _resident(studio)


def test_other_load_options_swap_the_copy_and_the_old_one_goes_first(studio):
    from modules.models.quant import LoadOptions

    with studio.models.use("toy", "small") as fp32:
        before = fp32
    fp32_bytes = _resident(studio)[("toy", "small")].footprint
    with studio.models.use("toy", "small", LoadOptions(dtype="bf16")) as bf16:
        assert bf16 is not before
    assert _resident(studio)[("toy", "small")].footprint == fp32_bytes // 2
    rows = [r for r in studio.models.describe() if r["kind"] == "toy" and r["name"] == "small.safetensors"]
    assert len(rows) == 1 and rows[0]["location"] == "cpu"
    assert studio.toy.loads == ["small", "small"]
    assert len([m for m in studio.models.resident() if m.kind == "toy"]) == 1


def test_describe_and_budgets_cover_every_kind(studio):
    with studio.models.use("toy", "small"):
        rows = {(r["kind"], r["name"]): r for r in studio.models.describe()}
        assert rows[("toy", "small.safetensors")]["in_use"] is True
        assert rows[("toy", "small.safetensors")]["footprint_bytes"] > MiB
        assert rows[("toy", "big.safetensors")]["location"] == "disk"
        assert rows[("checkpoint", "atelier-demo-sd15")]["active"] is True
    (gauge,) = studio.models.budgets()
    assert gauge["device"] == "cpu" and gauge["used_bytes"] == studio.models.used("cpu") > 0


# -- the same with the real second kind: the demo Gemma 2 chat model through the transformers adapter --

def _gemma(studio):
    from modules.models.demo_lm import DEMO_LLM_NAME

    return studio.models.use("llm", DEMO_LLM_NAME)


def _greedy(lm, n: int = 4) -> list[int]:
    import torch

    ids = lm.tokenizer("hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        out = lm.model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, ids.shape[1]:].tolist()


def test_an_sd_checkpoint_and_a_gemma_stay_resident_and_alternate_without_reloading(studio):
    with studio.models.use("checkpoint") as sd, _gemma(studio) as lm:
        tokens = _greedy(lm)
    for _ in range(3):
        with studio.models.use("checkpoint") as again:
            assert again is sd
        with _gemma(studio) as again:
            assert again is lm and _greedy(again) == tokens
    kinds = sorted(m.kind for m in studio.models.resident())
    assert kinds == ["checkpoint", "llm"]


def test_with_a_budget_for_one_gemma_and_sd_evict_each_other_but_never_the_one_in_use(studio):
    with _gemma(studio):
        pass
    sizes = {m.kind: m.footprint for m in studio.models.resident()}
    budget = max(sizes.values()) + min(sizes.values()) // 2
    studio.settings.update_section("models", {"ram_budget_gb": budget / 1024**3}, save=False)
    with studio.models.use("checkpoint"):
        assert [m.kind for m in studio.models.resident()] == ["checkpoint"]
    with _gemma(studio):
        assert [m.kind for m in studio.models.resident()] == ["llm"]

    held, release, got_sd = threading.Event(), threading.Event(), threading.Event()

    def chat_job():
        with _gemma(studio) as lm:
            held.set()
            release.wait(DEADLINE_S)
            _greedy(lm, 2)  # still usable: it was not evicted under it

    def image_job():
        with studio.models.use("checkpoint"):
            got_sd.set()

    chat = threading.Thread(target=chat_job)
    chat.start()
    assert held.wait(DEADLINE_S)
    image = threading.Thread(target=image_job)
    image.start()
    time.sleep(1.0)
    assert not got_sd.is_set() and [m.kind for m in studio.models.resident()] == ["llm"]
    release.set()
    chat.join(DEADLINE_S)
    image.join(DEADLINE_S)
    assert got_sd.is_set()
    assert [m.kind for m in studio.models.resident()] == ["checkpoint"]


def test_an_nf4_gemma_through_the_manager_is_smaller_than_fp32_and_generates(studio):
    from modules.models.demo_lm import DEMO_LLM_NAME
    from modules.models.quant import LoadOptions

    with _gemma(studio) as lm:
        assert len(_greedy(lm)) == 4
    fp32 = {m.kind: m for m in studio.models.resident()}["llm"]
    with studio.models.use("llm", DEMO_LLM_NAME, LoadOptions(quantization="nf4", double_quant=True)) as lm:
        assert len(_greedy(lm)) == 4
    nf4 = {m.kind: m for m in studio.models.resident()}["llm"]
    assert nf4.footprint < 0.6 * fp32.footprint
    assert nf4.movable is False
    row = [r for r in studio.models.describe() if r["kind"] == "llm" and r["name"] == DEMO_LLM_NAME][0]
    assert row["quantization"] == "nf4 double quant" and row["footprint_bytes"] == nf4.footprint
