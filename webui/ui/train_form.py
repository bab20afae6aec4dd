"""The Train tab's forms, built from the request models of modules/training/params.py (KINDS): one
widget per field, chosen by its type (Literal → dropdown, bool → checkbox, int / float → number,
str → textbox, a list of strings → one per line), labelled from its name and described by its Field
description and bounds; grouped by LAYOUT (kohya_ss's sections). A kind added to KINDS gets a form
without a change here: fields LAYOUT does not name go to DEFAULT_GROUP.

No gradio at import: `FieldSpec` and the form ↔ request conversions are plain Python (tested alone);
`build_form` makes the components when the tab is built.
"""
from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt, MultipleOf
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from modules.errors import AtelierError, InvalidRequest

GROUPS = ("Basics", "Dataset", "Network", "Optimizer", "Samples", "Options", "Advanced")
DEFAULT_GROUP = "Options"  # fields of a kind that LAYOUT does not place (a new kind's own)
OPEN_GROUPS = ("Basics", "Options")
HIDDEN = ("kind",)  # the kind picker sets it
_SHARED = {  # TrainingRequest's fields, for every kind
    "Basics": ("output_name", "base_model", "dataset", "epochs", "max_steps", "batch_size"),
    "Optimizer": ("optimizer", "lr_scheduler", "lr_warmup_steps", "weight_decay", "max_grad_norm",
                  "gradient_accumulation"),
    "Advanced": ("mixed_precision", "gradient_checkpointing", "seed", "save_every", "keep_checkpoints",
                 "stop_after_steps", "gpus", "overwrite", "resume"),
}
# An extension's kind shares only BaseTrainingRequest's fields (modules/training/params.py).
_SHARED_BASICS = {"Basics": ("output_name", "base_model", "dataset", "epochs", "batch_size"),
                  "Advanced": ("seed", "overwrite", "resume")}
LAYOUT: dict[str, dict[str, tuple[str, ...]]] = {
    "sd_lora": {
        "Basics": ("resolution",),
        "Dataset": ("bucketing", "default_caption", "cache_latents", "cache_text_encoder_outputs"),
        "Network": ("rank", "alpha", "train_text_encoder"),
        "Optimizer": ("unet_lr", "text_encoder_lr"),
        "Samples": ("sample_every", "sample_prompts", "sample_steps", "sample_seed"),
        "Advanced": ("min_snr_gamma", "noise_offset"),
    },
    "dreambooth": {
        "Basics": ("mode", "resolution"),
        "Dataset": ("instance_prompt", "prior_preservation", "class_prompt", "class_dataset", "num_class_images",
                    "class_steps", "prior_loss_weight", "bucketing", "cache_latents", "cache_text_encoder_outputs"),
        "Network": ("rank", "alpha", "train_text_encoder"),
        "Optimizer": ("unet_lr", "text_encoder_lr"),
        "Samples": ("sample_every", "sample_prompts", "sample_steps", "sample_seed"),
        "Advanced": ("min_snr_gamma", "noise_offset"),
    },
    "paligemma_lora": {
        "Dataset": ("cutoff_len",),
        "Network": ("rank", "alpha", "dropout", "target_modules", "train_vision_tower", "quantization", "double_quant"),
        "Optimizer": ("learning_rate",),
        "Options": ("save_merged",),
    },
    "lm_lora": {
        "Dataset": ("format", "cutoff_len", "packing"),
        "Network": ("rank", "alpha", "dropout", "target_modules", "quantization", "double_quant"),
        "Optimizer": ("learning_rate",),
        "Samples": ("sample_every", "sample_prompts", "sample_max_new_tokens"),
    },
}
LABELS = {"base_model": "Base model", "output_name": "Output name", "lr_scheduler": "LR scheduler",
          "lr_warmup_steps": "LR warmup steps", "unet_lr": "UNet LR", "text_encoder_lr": "Text encoder LR",
          "min_snr_gamma": "Min-SNR gamma", "gpus": "GPUs"}


@dataclass(frozen=True)
class FieldSpec:
    """One request field as the form shows it."""

    name: str
    widget: str  # choice | bool | int | float | text | lines | words | model | dataset | json
    label: str
    info: str
    default: Any  # the form's value (None: empty)
    optional: bool  # empty means None
    required: bool
    choices: tuple = ()
    group: str = DEFAULT_GROUP
    zero_is_none: bool = False  # an optional number that cannot be 0: the number box shows None as 0


    def to_value(self, raw: Any) -> Any:
        """The form's value → the request's (None when left empty and the field allows it)."""
        if self.widget == "bool":
            return bool(raw)
        if self.zero_is_none and raw == 0:
            return None
        if isinstance(raw, str):
            raw = raw.strip()
        if raw is None or raw == "":
            if self.optional:
                return None
            if self.widget == "lines":
                return []
            if self.widget in ("text", "model", "dataset", "words"):
                return ""
            raise InvalidRequest("is empty; fill it in", self.name)
        if self.widget == "choice":
            return next((c for c in self.choices if str(c) == str(raw)), raw)
        if self.widget == "int" and isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if self.widget == "lines":
            return [line.strip() for line in str(raw).splitlines() if line.strip()]
        if self.widget == "words":  # one of the literal choices, or a list of names
            if raw in self.choices:
                return raw
            return [w for w in str(raw).replace(",", " ").split() if w]
        if self.widget == "json":
            try:
                return json.loads(raw)
            except ValueError as exc:
                raise InvalidRequest(f"is not JSON ({exc})", self.name) from None
        return raw

    def to_form(self, value: Any) -> Any:
        """The request's value → what the widget shows."""
        if value is None and self.zero_is_none:
            return 0
        if value is None:
            return "" if self.widget in ("text", "lines", "words", "json", "model", "dataset") else None
        if self.widget == "lines":
            return "\n".join(value) if isinstance(value, list) else str(value)
        if self.widget == "words":
            return value if isinstance(value, str) else ", ".join(value)
        if self.widget == "json":
            return json.dumps(value)
        if self.widget == "choice":
            return str(value)
        return value


def _unwrap(annotation) -> tuple[Any, bool, list]:
    """(the type without None and Annotated, whether None is allowed, the constraints found)."""
    constraints: list = []
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            args = typing.get_args(annotation)
            annotation = args[0]
            for meta in args[1:]:  # Field(gt=0) carries its constraints in .metadata; a bare Gt(0) is one
                constraints.extend(meta.metadata if isinstance(meta, FieldInfo) else [meta])
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation, optional, constraints


def _widget(name: str, annotation) -> tuple[str, tuple]:
    if name == "base_model":
        return "model", ()
    if name == "dataset":
        return "dataset", ()
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "choice", typing.get_args(annotation)
    if annotation is bool:
        return "bool", ()
    if annotation is int:
        return "int", ()
    if annotation is float:
        return "float", ()
    if annotation is str:
        return "text", ()
    if origin is list and _unwrap(typing.get_args(annotation)[0])[0] is str:
        return "lines", ()
    if origin in (Union, types.UnionType):
        parts = typing.get_args(annotation)
        literals = [a for a in parts if typing.get_origin(a) is Literal]
        lists = [a for a in parts if typing.get_origin(a) is list]
        if literals and lists and len(literals) + len(lists) == len(parts):
            return "words", tuple(v for lit in literals for v in typing.get_args(lit))
    return "json", ()


def _bounds(constraints: list) -> str:
    words = []
    for c in constraints:
        if isinstance(c, Ge):
            words.append(f"≥ {c.ge}")
        elif isinstance(c, Gt):
            words.append(f"> {c.gt}")
        elif isinstance(c, Le):
            words.append(f"≤ {c.le}")
        elif isinstance(c, Lt):
            words.append(f"< {c.lt}")
        elif isinstance(c, MultipleOf):
            words.append(f"a multiple of {c.multiple_of}")
    return ", ".join(words)


def _allows_zero(constraints: list) -> bool:
    return not any((isinstance(c, Ge) and c.ge > 0) or (isinstance(c, Gt) and c.gt >= 0) for c in constraints)


def label_of(name: str) -> str:
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def layouts(kind: str, model: type[BaseModel]) -> list[dict]:
    """The tables that place a kind's fields: its own, those of the kinds it extends (a DreamBooth request
    built on the SD LoRA one is laid out as that one), then the shared one."""
    kinds = [kind] + [base.model_fields["kind"].default for base in model.__mro__[1:]
                      if isinstance(base, type) and issubclass(base, BaseModel) and "kind" in base.model_fields]
    shared = [_SHARED] if "max_steps" in model.model_fields else [_SHARED_BASICS]  # extensions' kinds: the few shared
    return [LAYOUT[k] for k in dict.fromkeys(kinds) if k in LAYOUT] + shared


def group_of(tables: list[dict], name: str) -> str:
    for table in tables:
        for group, names in table.items():
            if name in names:
                return group
    return DEFAULT_GROUP


def form_fields(kind: str, model: type[BaseModel], own: dict | None = None) -> list[FieldSpec]:
    """The form of one kind, in the groups' order and, inside a group, the table's (then the model's) order;
    `own`: the kind's table when LAYOUT has none (an extension's kind, from api.add_training_kind's layout)."""
    tables = ([own] if own else []) + layouts(kind, model)
    specs = []
    for name, info in model.model_fields.items():
        if name in HIDDEN:
            continue
        annotation, optional, constraints = _unwrap(info.annotation)
        constraints += list(info.metadata)
        widget, choices = _widget(name, annotation)
        required = info.is_required()
        if info.default_factory is not None:
            default = info.default_factory()
        else:
            default = None if info.default is PydanticUndefined else info.default
        zero_is_none = optional and widget in ("int", "float") and not _allows_zero(constraints)
        described = "; ".join(x for x in (info.description or "", _bounds(constraints),
                                          "0: none" if zero_is_none else "") if x)
        spec = FieldSpec(name, widget, label_of(name), f"{name}: {described}" if described else name, None,
                         optional or widget == "model", required, choices, group_of(tables, name), zero_is_none)
        specs.append(FieldSpec(**{**spec.__dict__, "default": spec.to_form(default)}))
    placed = {g: [n for t in reversed(tables) for n in t.get(g, ())] for g in GROUPS}

    def order(spec: FieldSpec) -> tuple[int, int]:
        names = placed[spec.group]
        return GROUPS.index(spec.group), names.index(spec.name) if spec.name in names else len(names)

    return sorted(specs, key=order)


def to_request(kind: str, specs: list[FieldSpec], values: list) -> dict:
    """The form's values → the JSON body of POST /atelier/v1/train (checked by params.parse, as there)."""
    body: dict[str, Any] = {"kind": kind}
    for spec, raw in zip(specs, values):
        body[spec.name] = spec.to_value(raw)
    return body


def to_form(specs: list[FieldSpec], body: dict) -> tuple[list, list[str]]:
    """A request (or preset) → the widgets' values (a field it lacks gets its default), and the names it
    has that this form does not know (a preset from an older version)."""
    known = {s.name for s in specs} | set(HIDDEN)
    values = [spec.to_form(body[spec.name]) if spec.name in body else spec.default for spec in specs]
    return values, sorted(k for k in body if k not in known)


def error_text(exc: AtelierError, specs: list[FieldSpec] | None = None) -> str:
    """An AtelierError → "Label (field): message", so the person finds the widget."""
    field, message = exc.field, exc.message
    if not field:
        return message
    spec = next((s for s in specs or [] if s.name == field.split(".")[0]), None)
    return f"{spec.label} ({field}): {message}" if spec else f"{field}: {message}"


def build_form(kind: str, specs: list[FieldSpec]) -> dict:
    """The kind's widgets in its groups' accordions (inside the caller's open column): name → component."""
    import gradio as gr

    widgets: dict = {}
    for group in GROUPS:
        in_group = [s for s in specs if s.group == group]
        if not in_group:
            continue
        with gr.Accordion(group, open=group in OPEN_GROUPS, elem_id=f"train_{kind}_group_{group.lower()}"):
            with gr.Row(equal_height=False):
                for spec in in_group:
                    widgets[spec.name] = _component(gr, kind, spec)
    return widgets


def _component(gr, kind: str, spec: FieldSpec):
    common = {"label": spec.label, "info": spec.info, "elem_id": f"train_{kind}_{spec.name}", "min_width": 220}
    if spec.widget == "choice":
        return gr.Dropdown([str(c) for c in spec.choices], value=spec.default, **common)
    if spec.widget == "bool":
        return gr.Checkbox(value=bool(spec.default), **common)
    if spec.widget in ("int", "float"):  # bounds are in the info; the request's check names the field
        return gr.Number(value=spec.default, precision=0 if spec.widget == "int" else None, **common)
    if spec.widget in ("model", "dataset"):  # choices fill in when the tab opens
        return gr.Dropdown([], value=spec.default or None, allow_custom_value=True, **common)
    if spec.widget == "lines":
        return gr.Textbox(value=spec.default, lines=2, max_lines=8, placeholder="one per line", **common)
    return gr.Textbox(value=spec.default, **common)
