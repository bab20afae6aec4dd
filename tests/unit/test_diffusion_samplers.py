"""A1111 sampler names and schedule types map to diffusers schedulers; bad names are refused by field.
(One image per sampler, equal to plain diffusers': test_diffusion_generate.py.)"""
import pytest

from modules.diffusion.samplers import SCHEDULE_TYPES, SamplerRegistry, SamplerSpec
from modules.errors import InvalidRequest
from tests.support import A1111_SAMPLERS

# Schedule type -> what it sets on the scheduler (A1111's names; diffusers' options).
SCHEDULES = {"Uniform": ("timestep_spacing", "linspace"), "Karras": ("use_karras_sigmas", True),
             "Exponential": ("use_exponential_sigmas", True), "SGM Uniform": ("timestep_spacing", "trailing")}


@pytest.fixture(scope="module")
def base_config():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  steps_offset=1, timestep_spacing="leading").config


@pytest.mark.parametrize("name", list(A1111_SAMPLERS))
def test_every_a1111_sampler_is_its_diffusers_scheduler_with_its_options(base_config, name):
    reg = SamplerRegistry()
    cls_name, options, default_schedule = A1111_SAMPLERS[name]
    spec, schedule = reg.resolve(name)
    assert (spec.name, schedule) == (name, default_schedule)
    sched = reg.make_scheduler(name, base_config, seed=1)
    assert type(sched).__name__ == cls_name, f"{name} is {type(sched).__name__}, not {cls_name}"
    for key, value in options.items():
        assert sched.config[key] == value, f"{name}: {key} is {sched.config[key]!r}, not {value!r}"
    if "noise_sampler_seed" in sched.config:
        assert sched.config.noise_sampler_seed == 1, "DPM++ SDE's Brownian noise must follow the seed"
    sched.set_timesteps(6)
    assert 6 <= len(sched.timesteps) <= 12  # second-order samplers (Heun, DPM2) step twice


@pytest.mark.parametrize("name", list(A1111_SAMPLERS))
def test_each_schedule_type_reaches_the_scheduler_and_changes_its_sigmas(base_config, name):
    import torch

    reg = SamplerRegistry()
    spec, _ = reg.resolve(name)
    assert SCHEDULE_TYPES == ("Automatic", "Uniform", "Karras", "Exponential", "SGM Uniform")
    assert "Automatic" in spec.schedule_types()
    import diffusers

    cls_name, options, _ = A1111_SAMPLERS[name]
    cls = getattr(diffusers, cls_name)  # the same scheduler with no schedule option at all
    plain = cls.from_config(base_config, **{k: v for k, v in options.items() if k not in ("use_karras_sigmas",
                                                                                          "use_exponential_sigmas")})
    plain.set_timesteps(6)
    for schedule in spec.schedule_types():
        if schedule == "Automatic":
            continue
        sched = reg.make_scheduler(name, base_config, schedule, seed=1)
        key, value = SCHEDULES[schedule]
        assert sched.config[key] == value, (name, schedule, key)
        sched.set_timesteps(6)
        differs = (not torch.equal(sched.timesteps, plain.timesteps) if len(sched.timesteps) == len(plain.timesteps)
                   else True)
        if hasattr(sched, "sigmas") and len(sched.sigmas) == len(plain.sigmas):
            differs = differs or not torch.allclose(sched.sigmas, plain.sigmas)
        assert differs, f"{name} with {schedule}: the same steps as without it"


def test_schedule_options_reach_the_scheduler(base_config):
    reg = SamplerRegistry()
    karras = reg.make_scheduler("DPM++ 2M", base_config, "Karras")
    assert type(karras).__name__ == "DPMSolverMultistepScheduler" and karras.config.use_karras_sigmas
    # Automatic after Karras: nothing leaks, the base config decides
    euler_karras = reg.make_scheduler("Euler", base_config, "Karras")
    assert not reg.make_scheduler("Euler", euler_karras.config, "Automatic").config.use_karras_sigmas
    assert reg.make_scheduler("Euler", base_config, "Exponential").config.use_exponential_sigmas
    assert reg.make_scheduler("Euler", base_config, "SGM Uniform").config.timestep_spacing == "trailing"
    assert reg.make_scheduler("DPM++ 2M SDE", base_config).config.algorithm_type == "sde-dpmsolver++"
    assert reg.make_scheduler("PLMS", base_config).config.skip_prk_steps


def test_automatic_means_the_samplers_a1111_default_schedule():
    reg = SamplerRegistry()
    assert reg.resolve("DPM++ 2M")[1] == "Karras"
    assert reg.resolve("DPM++ 2M SDE", "Automatic")[1] == "Exponential"
    assert reg.resolve("DPM2 a")[1] == "Karras"
    assert reg.resolve("Euler a")[1] == "Automatic"  # no default: the checkpoint's own config
    assert reg.resolve("DPM++ 2M", "Uniform")[1] == "Uniform"  # an explicit choice wins


def test_legacy_combined_names_resolve_to_sampler_and_schedule():
    reg = SamplerRegistry()
    for legacy, sampler in [("DPM++ 2M Karras", "DPM++ 2M"), ("DPM++ SDE Karras", "DPM++ SDE"),
                            ("DPM++ 2M SDE Karras", "DPM++ 2M SDE")]:
        spec, schedule = reg.resolve(legacy)
        assert (spec.name, schedule) == (sampler, "Karras")
    assert reg.resolve("k_euler_a")[0].name == "Euler a"
    assert reg.resolve("Euler", "karras")[1] == "Karras"  # A1111 API names for schedulers
    assert reg.resolve("Euler", "sgm_uniform")[1] == "SGM Uniform"


def test_unknown_names_are_refused_naming_the_field():
    reg = SamplerRegistry()
    with pytest.raises(InvalidRequest) as err:
        reg.resolve("Euler z")
    assert err.value.field == "sampler_name" and "Euler a" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        reg.resolve("Euler", "Bogus")
    assert err.value.field == "scheduler"
    with pytest.raises(InvalidRequest) as err:  # Euler a has no Karras option in diffusers: refuse, don't ignore
        reg.resolve("Euler a", "Karras")
    assert err.value.field == "scheduler" and "Automatic" in err.value.message


def test_extensions_add_samplers(base_config):
    from diffusers import EulerDiscreteScheduler

    reg = SamplerRegistry()
    reg.add(SamplerSpec("My Euler", EulerDiscreteScheduler, {"timestep_spacing": "trailing"}))
    assert "My Euler" in reg.names()
    assert reg.make_scheduler("My Euler", base_config).config.timestep_spacing == "trailing"
