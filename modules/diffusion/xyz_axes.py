"""The axes of the X/Y/Z plot: A1111's list (its labels and, for `script_args`, its indices) and
what each does to a cell's request, plus A1111's value syntax (`1-5`, `1-10 (+2)`, `0.5-1 [3]`).

A1111 addresses an axis by its index in the list its UI shows — txt2img and img2img show slightly
different lists — so the lists below follow A1111 1.10 entry for entry. Axes Atelier cannot honour
(sigma tweaks, refiner, face restore, …) are kept in their places and refused by name; Atelier's
own axes come after A1111's, so its indices stay valid. A label ("Steps") works wherever an index does.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any, Callable

from modules.diffusion.prompts import extract_loras


@dataclass(frozen=True)
class Axis:
    label: str
    kind: type | str  # int, float, str, or "permutations" (Prompt order)
    apply: Callable[[dict, Any, list], None] | None  # (request fields, value, all values); None: not available
    where: str = "both"  # "txt2img", "img2img" or "both"
    cost: float = 0.0  # slow to change (a checkpoint): processed outermost, so it changes least often
    choices: str | None = None  # the registry its values come from: "samplers", "checkpoints", …
    label_style: str = "named"  # "named": "Steps: 20"; "value": just the value; "list": a permutation; "none"
    why_not: str = ""


def _set(name: str):
    def apply(fields: dict, value, values) -> None:
        fields[name] = value
    return apply


def _override(name: str):
    def apply(fields: dict, value, values) -> None:
        fields["override_settings"] = {**fields.get("override_settings", {}), name: value}
    return apply


def _prompt_sr(fields: dict, value: str, values: list) -> None:
    """A1111's Prompt S/R: the first value is searched for; each value replaces it in both prompts."""
    search = values[0]
    prompt, negative = fields.get("prompt", ""), fields.get("negative_prompt", "")
    if search not in prompt and search not in negative:
        raise ValueError(f"Prompt S/R did not find {search!r} in the prompt or the negative prompt")
    fields["prompt"], fields["negative_prompt"] = prompt.replace(search, value), negative.replace(search, value)


def _prompt_order(fields: dict, order: tuple, values: list) -> None:
    """A1111's Prompt order: the listed tokens, where they first appear, put in this order."""
    prompt = fields.get("prompt", "")
    found = sorted((prompt.find(token), token) for token in order)
    parts = []
    for _, token in found:
        n = prompt.find(token)
        parts.append(prompt[:n])
        prompt = prompt[n + len(token):]
    fields["prompt"] = "".join(part + order[i] for i, part in enumerate(parts)) + prompt


def _styles(fields: dict, value: str, values: list) -> None:
    fields["styles"] = list(fields.get("styles", [])) + [s.strip() for s in value.split(",") if s.strip()]


def _size(fields: dict, value: str, values: list) -> None:
    width, sep, height = value.partition("x")
    try:
        fields["width"], fields["height"] = int(width.strip()), int(height.strip())
    except ValueError:
        raise ValueError(f"size {value!r} is not WIDTHxHEIGHT (e.g. 512x768)") from None
    if not sep:
        raise ValueError(f"size {value!r} is not WIDTHxHEIGHT (e.g. 512x768)")


_LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)((?::[^:>]*)*)>", re.I)


def _lora_weight(fields: dict, value: float, values: list) -> None:
    """Atelier's LoRA weight: every `<lora:name:w>` of the prompt at this weight."""
    prompt = fields.get("prompt", "")
    if not extract_loras(prompt)[1]:
        raise ValueError("the LoRA weight axis needs a <lora:name:weight> tag in the prompt")
    fields["prompt"] = _LORA_TAG.sub(lambda m: f"<{m.group(1)}:{m.group(2)}:{value:g}>", prompt)


def _checkpoint(fields: dict, value: str, values: list) -> None:
    _override("sd_model_checkpoint")(fields, value, values)


def _unavailable(why: str):
    return {"apply": None, "why_not": why}


_SIGMAS = "Atelier's samplers are diffusers schedulers, which have no such knob"
# A1111 1.10's axis_options, in its order (txt2img- and img2img-only entries marked).
A1111_AXES: list[Axis] = [
    Axis("Nothing", str, lambda f, v, vs: None, label_style="none"),
    Axis("Seed", int, _set("seed")),
    Axis("Var. seed", int, _set("subseed")),
    Axis("Var. strength", float, _set("subseed_strength")),
    Axis("Steps", int, _set("steps")),
    Axis("Hires steps", int, _set("hr_second_pass_steps"), where="txt2img"),
    Axis("CFG Scale", float, _set("cfg_scale")),
    Axis("Image CFG Scale", float, where="img2img", **_unavailable("it is for InstructPix2Pix checkpoints")),
    Axis("Prompt S/R", str, _prompt_sr, label_style="value"),
    Axis("Prompt order", "permutations", _prompt_order, label_style="list"),
    Axis("Sampler", str, _set("sampler_name"), where="txt2img", choices="samplers", label_style="value"),
    Axis("Hires sampler", str, _set("hr_sampler_name"), where="txt2img", choices="samplers"),
    Axis("Sampler", str, _set("sampler_name"), where="img2img", choices="samplers", label_style="value"),
    Axis("Checkpoint name", str, _checkpoint, cost=1.0, choices="checkpoints", label_style="value"),
    Axis("Negative Guidance minimum sigma", float, **_unavailable(_SIGMAS)),
    Axis("Sigma Churn", float, **_unavailable(_SIGMAS)),
    Axis("Sigma min", float, **_unavailable(_SIGMAS)),
    Axis("Sigma max", float, **_unavailable(_SIGMAS)),
    Axis("Sigma noise", float, **_unavailable(_SIGMAS)),
    Axis("Schedule type", str, _set("scheduler"), choices="schedules"),
    Axis("Schedule min sigma", float, **_unavailable(_SIGMAS)),
    Axis("Schedule max sigma", float, **_unavailable(_SIGMAS)),
    Axis("Schedule rho", float, **_unavailable(_SIGMAS)),
    Axis("Skip Early CFG", float, **_unavailable("Atelier has no skip-early-CFG setting")),
    Axis("Beta schedule alpha", float, **_unavailable(_SIGMAS)),
    Axis("Beta schedule beta", float, **_unavailable(_SIGMAS)),
    Axis("Eta", float, **_unavailable("Atelier has no eta setting")),
    Axis("Clip skip", int, _set("clip_skip")),
    Axis("Denoising", float, _set("denoising_strength")),
    Axis("Initial noise multiplier", float, **_unavailable("Atelier has no initial noise multiplier")),
    Axis("Extra noise", float, **_unavailable("Atelier has no img2img extra noise")),
    Axis("Hires upscaler", str, _set("hr_upscaler"), where="txt2img", choices="upscalers"),
    Axis("Cond. Image Mask Weight", float, where="img2img", **_unavailable("Atelier has no conditioning mask weight")),
    Axis("VAE", str, cost=0.7, **_unavailable("a VAE for one request is not supported yet; set sd_vae in the options")),
    Axis("Styles", str, _styles, choices="styles"),
    Axis("UniPC Order", int, cost=0.5, **_unavailable("Atelier's UniPC uses its scheduler's order")),
    Axis("Face restore", str, **_unavailable("face restoration is not available yet")),
    Axis("Token merging ratio", float, **_unavailable("Atelier has no token merging")),
    Axis("Token merging ratio high-res", float, **_unavailable("Atelier has no token merging")),
    Axis("Always discard next-to-last sigma", str, **_unavailable(_SIGMAS)),
    Axis("SGM noise multiplier", str, **_unavailable(_SIGMAS)),
    Axis("Refiner checkpoint", str, cost=1.0, **_unavailable("Atelier has no refiner pass")),
    Axis("Refiner switch at", float, **_unavailable("Atelier has no refiner pass")),
    Axis("RNG source", str, **_unavailable("Atelier's noise is always made on the CPU")),
    Axis("FP8 mode", str, cost=0.9, **_unavailable("load options are set per model in the Models tab")),
    Axis("Size", str, _size),
]
ATELIER_AXES: list[Axis] = [
    Axis("LoRA weight", float, _lora_weight),
    Axis("Hires upscale", float, _set("hr_scale"), where="txt2img"),
]


def axes_for(kind: str) -> list[Axis]:
    """The list a txt2img or img2img request's indices point into."""
    return [a for a in A1111_AXES + ATELIER_AXES if a.where in ("both", kind)]


def find_axis(kind: str, key) -> Axis:
    """An axis by A1111 index or by label (case-insensitive); ValueError names what is there."""
    axes = axes_for(kind)
    if isinstance(key, bool):
        raise ValueError("an axis type is an index or a label, not true/false")
    if isinstance(key, int):
        if 0 <= key < len(axes):
            return axes[key]
        raise ValueError(f"axis index {key} is past the {kind} list (0..{len(axes) - 1})")
    if isinstance(key, str):
        text = key.strip()
        if text.isdigit():
            return find_axis(kind, int(text))
        for axis in axes:
            if axis.label.lower() == text.lower():
                return axis
        raise ValueError(f"no axis {text!r} for {kind}; available: {', '.join(a.label for a in axes if a.apply)}")
    raise ValueError("an axis type is an index (A1111's) or a label such as 'Steps'")


# -- values ------------------------------------------------------------------
_INT = r"([+-]?\s*\d+)"
_FLOAT = r"([+-]?\s*\d+(?:\.\d*)?)"
_RANGE_INT = re.compile(rf"\s*{_INT}\s*-\s*{_INT}(?:\s*\(([+-]\d+)\s*\))?\s*")
_COUNT_INT = re.compile(rf"\s*{_INT}\s*-\s*{_INT}(?:\s*\[(\d+)\s*\])?\s*")
_RANGE_FLOAT = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
_COUNT_FLOAT = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}(?:\s*\[(\d+(?:\.\d*)?)\s*\])?\s*")
MAX_VALUES = 256


def split_csv(text: str) -> list[str]:
    """A1111's comma-separated values: CSV quoting, each value stripped."""
    rows = csv.reader(io.StringIO(text or ""))
    return [v.strip() for row in rows for v in row]


def _num(text: str, kind: type):
    return kind(text.replace(" ", ""))


def _linspace(start: float, stop: float, num: int) -> list[float]:
    if num <= 1:
        return [start]
    return [start + (stop - start) * i / (num - 1) for i in range(num)]


def _expand(values: list[str], kind: type) -> list:
    out: list = []
    steps_re, count_re = (_RANGE_INT, _COUNT_INT) if kind is int else (_RANGE_FLOAT, _COUNT_FLOAT)
    for value in values:
        step_match, count_match = steps_re.fullmatch(value), count_re.fullmatch(value)
        if step_match:
            start, end = _num(step_match.group(1), kind), _num(step_match.group(2), kind)
            step = _num(step_match.group(3), kind) if step_match.group(3) else 1
            if step == 0 or (end - start) / step > MAX_VALUES:
                raise ValueError(f"the range {value!r} has too many values (at most {MAX_VALUES})")
            if kind is int:
                out += list(range(start, end + 1, step))
            else:
                n = int((end - start) / step + 1e-9)
                out += [round(start + i * step, 10) for i in range(n + 1)]
        elif count_match:
            start, end = _num(count_match.group(1), kind), _num(count_match.group(2), kind)
            num = int(float(count_match.group(3))) if count_match.group(3) else 1
            if num > MAX_VALUES:
                raise ValueError(f"the range {value!r} asks for {num} values (at most {MAX_VALUES})")
            points = _linspace(float(start), float(end), num)
            out += [int(p) for p in points] if kind is int else points
        else:
            try:
                out.append(kind(value))
            except ValueError:
                noun = "a whole number" if kind is int else "a number"
                raise ValueError(f"{value!r} is not {noun}") from None
    return out


def parse_values(axis: Axis, text: str, dropdown: list | None, csv_mode: bool) -> list:
    """The values of one axis, as A1111 reads them: from the dropdown for an axis with choices (unless
    csv_mode; an empty dropdown falls back to the text), else comma-separated text with ranges."""
    if axis.label == "Nothing":
        return [None]
    if axis.choices and not csv_mode and dropdown:
        raw = [str(v).strip() for v in dropdown]
    else:
        raw = split_csv(text if isinstance(text, str) else "")
    raw = [v for v in raw if v != ""] if axis.kind is not str else raw
    if not raw or raw == [""]:
        raise ValueError(f"give the {axis.label} axis some values")
    if axis.kind in (int, float):
        values = _expand(raw, axis.kind)
    elif axis.kind == "permutations":
        values = list(permutations(raw))
    else:
        values = raw
    if not values:
        raise ValueError(f"the {axis.label} axis has no values (a range that runs backwards?)")
    if len(values) > MAX_VALUES:
        raise ValueError(f"the {axis.label} axis has {len(values)} values (at most {MAX_VALUES})")
    return values


def format_label(axis: Axis, value) -> str:
    """A1111's legend text: "Steps: 20", the bare value for Prompt S/R and samplers, nothing for Nothing."""
    if axis.label_style == "none" or value is None:
        return ""
    if isinstance(value, float):
        value = round(value, 8)
        value = int(value) if value.is_integer() else value
    if axis.label_style == "list":
        return ", ".join(value)
    if axis.label_style == "value":
        return str(value).rsplit("/", 1)[-1]
    return f"{axis.label}: {value}"


@dataclass
class AxisPlan:
    axis: Axis
    values: list
    text: str  # the values as the request wrote them (the grid's infotext records them)
    vary_seeds: bool = False
    labels: list[str] = field(default_factory=list)
