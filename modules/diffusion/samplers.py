"""AUTOMATIC1111 sampler names and schedule types mapped to diffusers schedulers.

A sampler is a diffusers scheduler class plus fixed options; a schedule type is a
second set of options (Karras sigmas, timestep spacing, …) that only some classes
accept — we read each class's constructor to know which, so an impossible pair is
refused with a message instead of being silently ignored by `from_config`.
Legacy combined names ("DPM++ 2M Karras") resolve to sampler + schedule.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from modules.errors import InvalidRequest

# Schedule type label -> scheduler options. "Automatic" is the checkpoint's own config.
SCHEDULE_OPTIONS: dict[str, dict[str, Any]] = {
    "Automatic": {},
    "Uniform": {"timestep_spacing": "linspace"},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}
SCHEDULE_TYPES = tuple(SCHEDULE_OPTIONS)
# A1111's API names for schedule types (GET /sdapi/v1/schedulers "name").
SCHEDULE_API_NAMES = {"Automatic": "automatic", "Uniform": "uniform", "Karras": "karras",
                      "Exponential": "exponential", "SGM Uniform": "sgm_uniform"}
# Options a schedule type may set: reset to off for "Automatic" so nothing leaks from a base config.
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    scheduler_class: Any  # a diffusers class name, or a scheduler class (extensions)
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    note: str = ""  # where the mapping is only the closest diffusers has
    default_schedule: str = "Automatic"  # what "Automatic" means for this sampler (A1111 1.9+ defaults)
    ignores: tuple[str, ...] = ()  # options its constructor takes but its set_timesteps never reads

    def cls(self):
        if isinstance(self.scheduler_class, str):
            import diffusers

            return getattr(diffusers, self.scheduler_class)
        return self.scheduler_class

    def accepted_options(self) -> set[str]:
        return set(inspect.signature(self.cls().__init__).parameters)

    def schedule_types(self) -> list[str]:
        accepted = self.accepted_options() - set(self.ignores)
        return [label for label, opts in SCHEDULE_OPTIONS.items() if set(opts) <= accepted]


BUILTIN_SAMPLERS = [
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                aliases=("k_dpmpp_2m",), default_schedule="Karras"),
    SamplerSpec("DPM++ SDE", "DPMSolverSDEScheduler", aliases=("k_dpmpp_sde",), default_schedule="Karras"),
    SamplerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                aliases=("k_dpmpp_2m_sde",), default_schedule="Exponential"),
    SamplerSpec("DPM++ 2S a", "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                aliases=("k_dpmpp_2s_a",), note="diffusers has no ancestral single-step solver; this is DPM++ 2S",
                default_schedule="Karras"),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", aliases=("k_euler_a", "k_euler_ancestral")),
    SamplerSpec("Euler", "EulerDiscreteScheduler", aliases=("k_euler",)),
    SamplerSpec("LMS", "LMSDiscreteScheduler", aliases=("k_lms",)),
    SamplerSpec("Heun", "HeunDiscreteScheduler", aliases=("k_heun",)),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", aliases=("k_dpm_2",), default_schedule="Karras"),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", aliases=("k_dpm_2_a",), default_schedule="Karras"),
    SamplerSpec("DDIM", "DDIMScheduler", aliases=("ddim",)),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, aliases=("plms",)),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", aliases=("unipc",)),
    SamplerSpec("LCM", "LCMScheduler", aliases=("lcm",), ignores=("timestep_spacing",)),  # LCM picks its own steps
]


class SamplerRegistry:
    """Built-in samplers plus those extensions add (SamplerRegistry.add)."""

    def __init__(self):
        self._specs: dict[str, SamplerSpec] = {}
        for spec in BUILTIN_SAMPLERS:
            self.add(spec)

    def add(self, spec: SamplerSpec) -> None:
        self._specs[spec.name] = spec

    def remove(self, name: str) -> None:
        """Drop a sampler (an extension that added it was disabled)."""
        self._specs.pop(name, None)

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[SamplerSpec]:
        return list(self._specs.values())

    def _find(self, name: str) -> SamplerSpec | None:
        for spec in self._specs.values():
            if name == spec.name or name in spec.aliases:
                return spec
        return None

    def resolve(self, name: str, scheduler: str = "Automatic") -> tuple[SamplerSpec, str]:
        """(sampler, schedule type label) for a request's sampler_name and scheduler fields.

        "Automatic" becomes the sampler's default schedule (Karras for DPM++ 2M, …) or stays
        "Automatic" (the checkpoint's own scheduler config) where it has none.
        """
        schedule = resolve_schedule(scheduler)
        spec = self._find(name)
        if spec is None:  # legacy "DPM++ 2M Karras": a sampler name with the schedule appended
            for label in SCHEDULE_TYPES[1:]:
                if name.endswith(" " + label) and self._find(name[: -len(label) - 1]):
                    spec = self._find(name[: -len(label) - 1])
                    if schedule == "Automatic":
                        schedule = label
                    break
        if spec is None:
            raise InvalidRequest(
                f"unknown sampler {name!r}; choose one of: {', '.join(self.names())}", "sampler_name")
        if schedule == "Automatic":  # as A1111 does: the sampler's own default, written out in the infotext
            schedule = spec.default_schedule
        allowed = spec.schedule_types()
        if schedule not in allowed:
            raise InvalidRequest(
                f"the {spec.name} sampler cannot use the {schedule} schedule; choose one of: {', '.join(allowed)}",
                "scheduler")
        return spec, schedule

    def make_scheduler(self, name: str, base_config: dict, scheduler: str = "Automatic", seed: int | None = None):
        """A fresh scheduler for one run, from the checkpoint's own scheduler config."""
        spec, schedule = self.resolve(name, scheduler)
        cls = spec.cls()
        accepted = spec.accepted_options()
        options = {k: False for k in _SIGMA_FLAGS if k in accepted}
        options.update(spec.options)
        options.update(SCHEDULE_OPTIONS[schedule])
        if seed is not None and "noise_sampler_seed" in accepted:  # DPM++ SDE: reproducible Brownian noise
            options["noise_sampler_seed"] = seed
        return cls.from_config(dict(base_config), **options)


def resolve_schedule(value: str) -> str:
    """A schedule type label from its label or A1111 API name ("karras" -> "Karras")."""
    if value in SCHEDULE_OPTIONS:
        return value
    for label, api in SCHEDULE_API_NAMES.items():
        if value.lower() in (api, label.lower()):
            return label
    raise InvalidRequest(f"unknown schedule type {value!r}; choose one of: {', '.join(SCHEDULE_TYPES)}", "scheduler")
