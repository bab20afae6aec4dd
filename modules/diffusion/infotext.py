"""AUTOMATIC1111's infotext: the `parameters` PNG chunk that PNG Info and civitai read.

    prompt
    Negative prompt: …
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: …, Model: …
"""
from __future__ import annotations

import json
import re

# key: value pairs on the last line; a value may be a JSON-quoted string holding commas.
_PAIR = re.compile(r'\s*([\w][\w \-/+.()]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def quote(value) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def build(prompt: str, negative_prompt: str, params: dict) -> str:
    """params: ordered {"Steps": 20, "Sampler": "Euler a", …}; None values are left out."""
    line = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None and v != "")
    text = prompt
    if negative_prompt:
        text += f"\nNegative prompt: {negative_prompt}"
    return f"{text}\n{line}"


def with_params(text: str, extra: dict) -> str:
    """The infotext with more key: value pairs at the end of its parameter line (A1111's extra params)."""
    pairs = ", ".join(f"{k}: {quote(v)}" for k, v in extra.items() if v is not None and v != "")
    if not pairs:
        return text
    return f"{text.rstrip()}, {pairs}" if text.strip() else pairs


def parse(text: str) -> dict:
    """Parse infotext into {"Prompt", "Negative prompt", "Steps", …, "Size-1", "Size-2"} like A1111."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    pairs = _PAIR.findall(last)
    if len(pairs) < 3:  # the last line is not a parameter line: it is all prompt
        pairs = []
    else:
        lines = lines[:-1]
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].lstrip()
        (negative_lines if in_negative else prompt_lines).append(line)
    result: dict = {"Prompt": "\n".join(prompt_lines).strip(), "Negative prompt": "\n".join(negative_lines).strip()}
    for key, value in pairs:
        value = unquote(value.strip())
        size = _SIZE.match(value)
        if size and key.strip() in ("Size", "Hires resize", "First pass size"):
            result[f"{key.strip()}-1"], result[f"{key.strip()}-2"] = size.group(1), size.group(2)
        result[key.strip()] = value
    return result


def parse_with_styles(text: str, styles) -> dict:
    """parse(), then A1111's "Apply if any": the styles (a StyleStore) whose text the prompts end with are
    taken out of them and listed as "Styles array"."""
    result = parse(text)
    found, prompt, negative = styles.take_out(result["Prompt"], result["Negative prompt"])
    if found:
        result.update({"Prompt": prompt, "Negative prompt": negative, "Styles array": found})
    return result


def parse_lora_hashes(value: str) -> dict[str, str]:
    out = {}
    for part in value.split(","):
        if ":" in part:
            name, h = part.rsplit(":", 1)
            out[name.strip()] = h.strip()
    return out


# Infotext key -> request field, for "send to txt2img" and /sdapi/v1/png-info.
FIELD_FOR_KEY = {
    "Prompt": ("prompt", str),
    "Negative prompt": ("negative_prompt", str),
    "Steps": ("steps", int),
    "Sampler": ("sampler_name", str),
    "Schedule type": ("scheduler", str),
    "CFG scale": ("cfg_scale", float),
    "Distilled CFG Scale": ("distilled_cfg_scale", float),  # Forge writes it for Flux
    "Seed": ("seed", int),
    "Variation seed": ("subseed", int),
    "Variation seed strength": ("subseed_strength", float),
    "Size-1": ("width", int),
    "Size-2": ("height", int),
    "Clip skip": ("clip_skip", int),
    "Denoising strength": ("denoising_strength", float),
    "Hires upscale": ("hr_scale", float),
    "Hires steps": ("hr_second_pass_steps", int),
    "Hires upscaler": ("hr_upscaler", str),
    "Mask blur": ("mask_blur", int),
    "Masked area padding": ("inpaint_full_res_padding", int),
    "Hires sampler": ("hr_sampler_name", str),
    "Hires schedule type": ("hr_scheduler", str),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
    "Hires resize-1": ("hr_resize_x", int),
    "Hires resize-2": ("hr_resize_y", int),
    "Tiling": ("tiling", lambda v: str(v).strip().lower() == "true"),
    "Face restoration": ("restore_faces", lambda v: bool(str(v).strip())),  # its value names the restorer
}


def _module_number(key: str) -> int:
    return int(key.split(" ", 1)[1])


def to_request_fields(parsed: dict) -> dict:
    """Turn parsed infotext into request fields (values that don't convert are left out)."""
    fields: dict = {}
    for key, (name, cast) in FIELD_FOR_KEY.items():
        if key in parsed and parsed[key] != "":
            try:
                fields[name] = cast(parsed[key])
            except (TypeError, ValueError):
                continue
    if "Hires upscale" in parsed or "Hires upscaler" in parsed or "Hires resize" in parsed:
        fields["enable_hr"] = True
    if parsed.get("Inpaint area") == "Only masked":
        fields["inpaint_full_res"] = True
    if "Model" in parsed:
        fields.setdefault("override_settings", {})["sd_model_checkpoint"] = parsed["Model"]
    modules = [parsed[k] for k in sorted((k for k in parsed if re.fullmatch(r"Module \d+", k)), key=_module_number)]
    if modules:  # Forge's Module 1, 2, …: the VAE / text encoder files, as its forge_additional_modules
        fields.setdefault("override_settings", {})["forge_additional_modules"] = modules
    if isinstance(parsed.get("Styles array"), list):
        fields["styles"] = list(parsed["Styles array"])
    return fields
