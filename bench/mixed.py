"""Figure: an SD1.5-size checkpoint and a Gemma 3 270M-size LLM through one model manager.

- both fit the budget: switching from one to the other (taking it with `models.use`) moves
  nothing, so it costs bookkeeping only (target < 0.1 s);
- a budget that fits one: on a GPU the other waits in the RAM cache and switching moves its
  tensors (target < 0.5 s). On the CPU the RAM is the device, so that case does not exist there.
"""
from __future__ import annotations

import shutil

from bench.common import Figure, timed

T_BOTH, T_ONE = "< 0.1 s", "< 0.5 s"
TITLE_BOTH = "switch SD1.5 <-> LLM 270M, both fit (nothing moves)"
TITLE_ONE = "switch SD1.5 <-> LLM 270M, budget fits one (RAM cache)"


def run(device: str, quick: bool, log=print) -> list[Figure]:
    from bench.llm_load import NAME as LLM_NAME, ensure_gemma3_270m_folder
    from bench.sd15 import ensure_sd15_folder, link_copy
    from bench.studio_setup import make_data_dir, open_studio

    sd = ensure_sd15_folder(log)
    llm = ensure_gemma3_270m_folder(log)
    data = make_data_dir(sd, name="mixed")
    link_copy(llm, data / "models" / "LLM" / LLM_NAME)
    reps = 5 if quick else 10
    studio = None
    figures = []
    try:
        studio = open_studio(data, device)
        models = studio.models

        def switch_to(kind: str, name: str) -> None:
            with models.use(kind, name):
                pass

        switch_to("checkpoint", sd.name), switch_to("llm", LLM_NAME)
        log(f"  mixed: {2 * reps} switches SD <-> LLM with both resident …")
        times = [timed(lambda i=i: switch_to(*(("checkpoint", sd.name) if i % 2 else ("llm", LLM_NAME))), device)
                 for i in range(2 * reps)]
        resident = sorted(m.kind for m in models.resident())
        figures.append(Figure.from_samples("switch_sd_llm_both", TITLE_BOTH, times, unit="s", target=T_BOTH,
                                           ok=lambda s: s < 0.1, resident=resident))
        if device == "cpu":
            figures.append(Figure.missing("switch_sd_llm_one", TITLE_ONE,
                                          "CPU only: the RAM is the device, there is no cache to switch from", T_ONE))
        else:
            sizes = {m.kind: m.footprint for m in models.resident()}
            budget = max(sizes.values()) + min(sizes.values()) // 2
            studio.settings.update_section("models", {"gpu_budget_gb": budget / 1024**3}, save=False)
            switch_to("checkpoint", sd.name), switch_to("llm", LLM_NAME)
            log(f"  mixed: {2 * reps} switches SD <-> LLM with a GPU budget for one …")
            times = [timed(lambda i=i: switch_to(*(("checkpoint", sd.name) if i % 2 else ("llm", LLM_NAME))), device)
                     for i in range(2 * reps)]
            places = {m.kind: m.device for m in models.resident()}
            figures.append(Figure.from_samples("switch_sd_llm_one", TITLE_ONE, times, unit="s", target=T_ONE,
                                               ok=lambda s: s < 0.5, places=places))
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"[:400]
        figures = [Figure.missing("switch_sd_llm_both", TITLE_BOTH, why, T_BOTH),
                   Figure.missing("switch_sd_llm_one", TITLE_ONE, why, T_ONE)]
    finally:
        if studio is not None:
            studio.shutdown()
        shutil.rmtree(data, ignore_errors=True)
    return figures
