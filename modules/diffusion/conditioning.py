"""The conditioning of one sampling pass, step by step: prompt editing and alternation applied.

A prompt without `[from:to:when]` or `[a|b]` is encoded as it always was (prompts.encode; Flux / SD3: the
text, which the pipeline encodes) and handed to the pipeline once. One with them is scheduled
(prompt_schedule.py), each distinct text of the schedule is encoded once (SD3: by its pipeline's own
encode_prompt, flow.encode_texts, its loop's `prompt_embeds` / `pooled_prompt_embeds`), and the embeddings
are swapped in through diffusers' `callback_on_step_end` — at the end of step i the pipeline gets the
conditioning of step i + 1 — so the denoising loop stays diffusers' own.

Steps are counted as the pipeline's loop counts them, which is what A1111's denoiser counts:
one per model evaluation (Heun, DPM2 and DPM++ SDE make 2 x steps - 1 of them), from 0 at the
first step a pass runs; the schedule spans a full pass of the request's steps (img2img at
denoising 0.5 runs the first half of it, as in A1111).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from modules.diffusion import flow, prompt_schedule, prompts


@dataclass
class StepConditioning:
    """`initial`: the pipeline's conditioning kwargs for the first step. `segments`: (end_at_step, variant)
    in order, variant an index into `variants` (the kwargs of each distinct combination of texts)."""

    initial: dict
    variants: list[dict] = field(default_factory=list)
    segments: list[tuple[int, int]] = field(default_factory=list)
    texts: list[tuple[str, ...]] = field(default_factory=list)  # the texts of each variant (positives, negatives)
    pooled_input: str = "add_text_embeds"  # the loop's name for the pooled embeddings: SDXL's; SD3 keeps its own

    @classmethod
    def fixed(cls, kwargs: dict) -> "StepConditioning":
        return cls(initial=kwargs)

    @property
    def varies(self) -> bool:
        return len(self.variants) > 1

    @property
    def tensor_inputs(self) -> list[str]:
        """What the step callback must see to swap: the pipeline's names for the CFG-concatenated embeddings."""
        if not self.varies:
            return []
        return ["prompt_embeds", self.pooled_input] if "pooled_prompt_embeds" in self.initial else ["prompt_embeds"]

    def variant_at(self, step: int) -> int:
        for end, variant in self.segments:
            if step <= end:
                return variant
        return self.segments[-1][1] if self.segments else 0

    def swapper(self):
        """A step callback part for one pipeline call: `swap(pipe, next_step, tensors)` puts the next
        step's embeddings into `tensors` (what callback_on_step_end returns) when they change."""
        current = [self.variant_at(0)]

        def swap(pipe, step: int, tensors: dict) -> None:
            if not self.varies:
                return
            variant = self.variant_at(step)
            if variant == current[0]:
                return
            current[0] = variant
            kw = self.variants[variant]
            cfg = pipe.do_classifier_free_guidance
            tensors["prompt_embeds"] = _for_loop(kw["negative_prompt_embeds"], kw["prompt_embeds"], cfg,
                                                 tensors["prompt_embeds"])
            pooled = self.pooled_input
            if pooled in tensors and "pooled_prompt_embeds" in kw:
                tensors[pooled] = _for_loop(kw["negative_pooled_prompt_embeds"], kw["pooled_prompt_embeds"],
                                            cfg, tensors[pooled])
        return swap


def _for_loop(negative, positive, cfg: bool, like):
    """The layout inside diffusers' loop: [negative; positive] with classifier-free guidance, else positive."""
    import torch

    value = torch.cat([negative, positive]) if cfg else positive
    return value.to(device=like.device, dtype=like.dtype)


def is_scheduled(texts: list[str]) -> bool:
    return any(prompt_schedule.has_schedule(prompts.extract_loras(t)[0]) for t in texts)


def build(pipe, positives: list[str], negatives: list[str], clip_skip: int, arch: str,
          steps: int, first_pass_steps: int | None = None) -> StepConditioning:
    """The conditioning of a pass of `steps` loop steps (hires: after `first_pass_steps`)."""
    import torch

    if not is_scheduled(positives + negatives):
        return StepConditioning.fixed(prompts.encode(pipe, positives, negatives, clip_skip, arch).kwargs)
    clean = [prompts.extract_loras(t)[0] for t in positives + negatives]
    schedules = [prompt_schedule.schedule(t, steps, first_pass_steps) for t in clean]
    per_step = [tuple(prompt_schedule.text_at(s, step) for s in schedules) for step in range(steps)]
    combos = list(dict.fromkeys(per_step))  # distinct combinations of texts, in order of first use
    segments: list[tuple[int, int]] = []
    for step, combo in enumerate(per_step):
        index = combos.index(combo)
        if segments and segments[-1][1] == index:
            segments[-1] = (step, index)
        else:
            segments.append((step, index))
    distinct = list(dict.fromkeys(text for combo in combos for text in combo))
    encode = flow.encode_texts if flow.is_flow(arch) else prompts.encode_texts
    embeds, pooled = encode(pipe, distinct, clip_skip, arch)
    by_text = {t: (e, p) for t, e, p in zip(distinct, embeds, pooled)}
    n = len(positives)
    zero_empty = getattr(pipe.config, "force_zeros_for_empty_prompt", False) and pooled[0] is not None
    variants = []
    for combo in combos:
        pos, neg = combo[:n], combo[n:]
        kw = {"prompt_embeds": torch.cat([by_text[t][0] for t in pos]),
              "negative_prompt_embeds": torch.cat([by_text[t][0] for t in neg])}
        if pooled[0] is not None:  # SDXL, SD3
            kw["pooled_prompt_embeds"] = torch.cat([by_text[t][1] for t in pos])
            kw["negative_pooled_prompt_embeds"] = torch.cat([by_text[t][1] for t in neg])
            if zero_empty and all(t == "" for t in neg):
                kw["negative_prompt_embeds"] = torch.zeros_like(kw["negative_prompt_embeds"])
                kw["negative_pooled_prompt_embeds"] = torch.zeros_like(kw["negative_pooled_prompt_embeds"])
        variants.append(kw)
    return StepConditioning(initial=variants[segments[0][1]], variants=variants, segments=segments, texts=combos,
                            pooled_input="pooled_prompt_embeds" if flow.is_flow(arch) else "add_text_embeds")


def loop_steps(run, pipe, steps: int, sampler: tuple[str, str] | None = None) -> int:
    """How many times the pipeline's loop runs in a full pass of `steps` steps with this sampler."""
    scheduler = run.scheduler_for(pipe, 0, sampler)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


def for_pass(run, pipe, positives: list[str], negatives: list[str], steps: int,
             sampler: tuple[str, str] | None = None, hires: bool = False) -> StepConditioning:
    """The conditioning of a pass of the run: the first pass, img2img, or (hires=True) the hires pass."""
    if flow.is_flow(run.arch) and not (flow.schedules_prompts(run.arch) and is_scheduled(positives + negatives)):
        return StepConditioning.fixed(flow.conditioning(positives, negatives))  # the pipeline encodes the text
    if not is_scheduled(positives + negatives):  # no scheduler needed to know how many steps
        return StepConditioning.fixed(prompts.encode(pipe, positives, negatives, run.clip_skip, run.arch).kwargs)
    total = loop_steps(run, pipe, steps, sampler)
    first = loop_steps(run, pipe, run.req.steps) if hires else None
    return build(pipe, positives, negatives, run.clip_skip, run.arch, total, first)
