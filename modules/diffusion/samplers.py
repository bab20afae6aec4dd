"""AUTOMATIC1111 sampler names mapped to diffusers schedulers (one interface: from_config)."""
from __future__ import annotations

from dataclasses import dataclass, field

from modules.errors import InvalidRequest


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    scheduler_class: str  # a class name in diffusers
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


BUILTIN_SAMPLERS = [
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", aliases=("k_euler_a",)),
    SamplerSpec("Euler", "EulerDiscreteScheduler", aliases=("k_euler",)),
]


class SamplerRegistry:
    """Built-in samplers plus those extensions add."""

    def __init__(self):
        self._specs: dict[str, SamplerSpec] = {}
        for spec in BUILTIN_SAMPLERS:
            self.add(spec)

    def add(self, spec: SamplerSpec) -> None:
        self._specs[spec.name] = spec

    def names(self) -> list[str]:
        return list(self._specs)

    def resolve(self, name: str) -> SamplerSpec:
        for spec in self._specs.values():
            if name == spec.name or name in spec.aliases:
                return spec
        raise InvalidRequest(f"unknown sampler {name!r}; available: {', '.join(self.names())}", "sampler_name")

    def make_scheduler(self, name: str, base_config: dict):
        import diffusers

        spec = self.resolve(name)
        cls = getattr(diffusers, spec.scheduler_class)
        return cls.from_config(base_config, **spec.options)
