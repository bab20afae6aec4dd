"""Shared widgets: the prompt row, the generation-parameters block, the results panel.

Every parameter component is keyed by its request field name (AUTOMATIC1111's API
names), so building a request, filling fields from infotext ("Reuse parameters",
PNG Info) and the REST API all speak the same names.
"""
from __future__ import annotations

from modules.diffusion import infotext as infotext_mod
from modules.diffusion import hires as hires_fix
from modules.diffusion.samplers import SCHEDULE_TYPES
from webui.ui.topbar import active_checkpoint


def lora_names(studio) -> list[str]:
    try:
        return [e.stem for e in studio.registry.list("lora")]  # what `<lora:NAME:w>` is matched against
    except Exception:  # a missing folder must not break the page
        return []


def style_names(studio) -> list[str]:
    try:
        return studio.styles.names()
    except Exception:  # an unreadable styles.csv must not break the page (the store logs why)
        return []


def prompt_row(studio, tab: str) -> dict:
    """Prompt + negative prompt on the left; Generate (↔ Interrupt/Skip), the LoRA and style pickers on the right."""
    import gradio as gr

    c: dict = {}
    with gr.Row(elem_id=f"{tab}_toprow", equal_height=False):
        with gr.Column(scale=6):
            c["prompt"] = gr.Textbox("", label="Prompt", lines=3, max_lines=12, elem_id=f"{tab}_prompt",
                                     placeholder="Prompt (Shift+Enter to generate)")
            c["negative_prompt"] = gr.Textbox("", label="Negative prompt", lines=2, max_lines=8,
                                              elem_id=f"{tab}_neg_prompt", placeholder="Negative prompt")
            c.update(_style_picker(studio, tab))
        with gr.Column(scale=1, min_width=180, elem_classes=["atelier-actions"]):
            c["generate"] = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate", size="lg")
            with gr.Row():
                c["interrupt"] = gr.Button("Interrupt", variant="stop", visible=False, elem_id=f"{tab}_interrupt", min_width=60)
                c["skip"] = gr.Button("Skip", visible=False, elem_id=f"{tab}_skip", min_width=60)
            with gr.Row():
                c["lora"] = gr.Dropdown(choices=lora_names(studio), value=None, label="LoRA → prompt",
                                        elem_id=f"{tab}_lora", scale=4, min_width=100)
                c["lora_refresh"] = gr.Button("🔄", elem_id=f"{tab}_lora_refresh", scale=1, min_width=40, size="sm")

    def add_lora(name, prompt):
        if not name:
            return gr.skip(), gr.skip()
        tag = f"<lora:{name}:1>"
        return (f"{prompt} {tag}".strip() if tag not in prompt else prompt), None

    c["lora"].input(add_lora, [c["lora"], c["prompt"]], [c["prompt"], c["lora"]], queue=False)
    c["lora_refresh"].click(lambda: gr.Dropdown(choices=lora_names(studio)), None, [c["lora"]], queue=False)
    _wire_styles(studio, c)
    return c


def _style_picker(studio, tab: str) -> dict:
    """A1111's styles: pick some (they apply when the job starts), or apply them into the boxes; save the
    prompts as a style."""
    import gradio as gr

    c: dict = {}
    with gr.Row(equal_height=True, elem_id=f"{tab}_styles_row"):
        c["styles"] = gr.Dropdown(choices=style_names(studio), value=[], multiselect=True, label="Styles",
                                  elem_id=f"{tab}_styles", scale=6, min_width=160, allow_custom_value=True,
                                  info="applied when you generate; 📋 writes them into the prompts")
        c["style_apply"] = gr.Button("📋", elem_id=f"{tab}_style_apply", scale=0, min_width=44, size="sm")
        c["styles_refresh"] = gr.Button("🔄", elem_id=f"{tab}_styles_refresh", scale=0, min_width=44, size="sm")
        with gr.Column(scale=3, min_width=160):
            with gr.Accordion("Save the prompts as a style", open=False, elem_id=f"{tab}_style_edit"):
                c["style_name"] = gr.Textbox(label="Style name", max_lines=1, elem_id=f"{tab}_style_name")
                with gr.Row():
                    c["style_save"] = gr.Button("💾 Save", elem_id=f"{tab}_style_save", size="sm")
                    c["style_delete"] = gr.Button("🗑️ Delete", elem_id=f"{tab}_style_delete", size="sm")
    return c


def _wire_styles(studio, c: dict) -> None:
    import gradio as gr

    from modules.diffusion import styles as styles_mod
    from modules.errors import AtelierError

    def choices(value=None):
        return gr.Dropdown(choices=style_names(studio), value=value)

    def apply(names, prompt, negative):
        """📋: the selected styles written into the prompt boxes (and deselected, as A1111 does)."""
        if not names:
            gr.Warning("Pick one or more styles first")
            return gr.skip(), gr.skip(), gr.skip()
        try:
            chosen = studio.styles.resolve(list(names))
        except AtelierError as exc:
            raise gr.Error(exc.message) from None
        return (styles_mod.apply(prompt or "", [s.prompt for s in chosen]),
                styles_mod.apply(negative or "", [s.negative_prompt for s in chosen]), choices([]))

    def save(name, prompt, negative, selected):
        try:
            studio.styles.save(styles_mod.PromptStyle(name or "", prompt or "", negative or ""))
        except AtelierError as exc:
            raise gr.Error(exc.message) from None
        gr.Info(f"Saved style {name.strip()!r}")
        return choices([n for n in selected or [] if n in style_names(studio)])

    def delete(name, selected):
        try:
            studio.styles.delete((name or "").strip())
        except AtelierError as exc:
            raise gr.Error(exc.message) from None
        gr.Info(f"Deleted style {name.strip()!r}")
        return choices([n for n in selected or [] if n != name.strip() and n in style_names(studio)])

    boxes = [c["prompt"], c["negative_prompt"]]
    c["style_apply"].click(apply, [c["styles"], *boxes], [*boxes, c["styles"]], queue=False)
    c["style_save"].click(save, [c["style_name"], *boxes, c["styles"]], [c["styles"]], queue=False)
    c["style_delete"].click(delete, [c["style_name"], c["styles"]], [c["styles"]], queue=False)
    c["styles_refresh"].click(lambda selected: choices([n for n in selected or [] if n in style_names(studio)]),
                              [c["styles"]], [c["styles"]], queue=False)


def params_block(studio, tab: str, hires: bool) -> dict:
    """Sampler, steps, restore faces, tiling, hires fix, size, batch, CFG, seed, CLIP skip — A1111's order."""
    import gradio as gr

    s = studio.settings.get()
    c: dict = {}
    samplers = studio.samplers.names()
    with gr.Row():
        c["sampler_name"] = gr.Dropdown(samplers, value=samplers[0] if samplers else None, label="Sampling method",
                                        elem_id=f"{tab}_sampling")
        c["scheduler"] = gr.Dropdown(list(SCHEDULE_TYPES), value=SCHEDULE_TYPES[0], label="Schedule type",
                                     elem_id=f"{tab}_scheduler")
    c["steps"] = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{tab}_steps")
    with gr.Row():
        c["restore_faces"] = gr.Checkbox(False, label="Restore faces", elem_id=f"{tab}_restore_faces",
                                         info="GFPGAN after generation (a model in models/GFPGAN)")
        c["tiling"] = gr.Checkbox(False, label="Tiling", elem_id=f"{tab}_tiling",
                                  info="seamless: the picture continues across its edges")
    if hires:
        with gr.Accordion("Hires. fix", open=False, elem_id=f"{tab}_hires"):
            c["enable_hr"] = gr.Checkbox(False, label="Enable hires. fix", elem_id=f"{tab}_enable_hr")
            with gr.Row():
                # The upscaler models on disk join the list when the studio has read the folders.
                c["hr_upscaler"] = gr.Dropdown(hires_fix.choices(studio.registry), value=hires_fix.HR_UPSCALERS[0],
                                               label="Upscaler", allow_custom_value=True, elem_id=f"{tab}_hr_upscaler")
                c["hr_second_pass_steps"] = gr.Slider(0, 150, value=0, step=1, label="Hires steps (0: same)",
                                                      elem_id=f"{tab}_hires_steps")
                c["denoising_strength"] = gr.Slider(0, 1, value=0.7, step=0.01, label="Denoising strength",
                                                    elem_id=f"{tab}_denoising_strength")
            with gr.Row():
                c["hr_scale"] = gr.Slider(1, 4, value=2, step=0.05, label="Upscale by", elem_id=f"{tab}_hr_scale")
                c["hr_resize_x"] = gr.Slider(0, 2048, value=0, step=8, label="Resize width to", elem_id=f"{tab}_hr_resize_x")
                c["hr_resize_y"] = gr.Slider(0, 2048, value=0, step=8, label="Resize height to", elem_id=f"{tab}_hr_resize_y")
    with gr.Row():
        with gr.Column(scale=3):
            c["width"] = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id=f"{tab}_width")
            c["height"] = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id=f"{tab}_height")
        with gr.Column(scale=1, min_width=60):
            swap = gr.Button("⇅", elem_id=f"{tab}_res_switch", size="sm", min_width=40)
        with gr.Column(scale=2):
            c["n_iter"] = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{tab}_batch_count")
            c["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{tab}_batch_size")
    c["cfg_scale"] = gr.Slider(0, 30, value=7, step=0.5, label="CFG Scale", elem_id=f"{tab}_cfg_scale")
    # Flux-dev's distilled guidance (Forge's slider): shown while a Flux checkpoint is chosen (wire_arch_fields).
    c["distilled_cfg_scale"] = gr.Slider(0, 30, value=3.5, step=0.5, label="Distilled CFG Scale",
                                         visible=checkpoint_arch(studio, active_checkpoint(studio)) == "flux",
                                         elem_id=f"{tab}_distilled_cfg_scale")
    # Forge's VAE / Text Encoder picker (forge_additional_modules): the shared files a transformer-only Flux / SD3
    # file takes; empty takes models/text_encoder's and models/VAE's defaults. Shown for Flux / SD3 files only.
    c["forge_modules"] = gr.Dropdown(module_choices(studio), value=[], multiselect=True, allow_custom_value=True,
                                     label="VAE / Text Encoder", elem_id=f"{tab}_forge_modules",
                                     visible=takes_modules(studio, active_checkpoint(studio)))
    # The top bar's choice (wire_arch_fields keeps it): with modules picked, the job loads that checkpoint with them,
    # as Forge does — a GGUF / transformer-only file whose default encoders do not fit loads only so.
    c["chosen_checkpoint"] = gr.State(active_checkpoint(studio))
    with gr.Row(equal_height=True):
        c["seed"] = gr.Number(-1, label="Seed", precision=0, elem_id=f"{tab}_seed", scale=5, minimum=-1)
        c["random_seed"] = gr.Button("🎲", elem_id=f"{tab}_random_seed", scale=0, min_width=40)
        c["reuse_seed"] = gr.Button("♻️", elem_id=f"{tab}_reuse_seed", scale=0, min_width=40)
        c["seed_extra"] = gr.Checkbox(False, label="Extra", elem_id=f"{tab}_subseed_show", scale=1, min_width=60)
    with gr.Row(visible=False) as extra_row:
        c["subseed"] = gr.Number(-1, label="Variation seed", precision=0, elem_id=f"{tab}_subseed", minimum=-1)
        c["subseed_strength"] = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                          elem_id=f"{tab}_subseed_strength")
    c["extra_row"] = extra_row
    c["clip_skip"] = gr.Slider(1, 12, value=s.CLIP_stop_at_last_layers, step=1, label="Clip skip",
                               elem_id=f"{tab}_clip_skip")

    swap.click(lambda w, h: (h, w), [c["width"], c["height"]], [c["width"], c["height"]], queue=False)
    c["random_seed"].click(lambda: -1, None, [c["seed"]], queue=False)
    c["seed_extra"].change(lambda on: gr.Row(visible=on), [c["seed_extra"]], [extra_row], queue=False)
    return c


def results_panel(tab: str) -> dict:
    """Progress, live preview, the result gallery, send-to buttons and the infotext under the image."""
    import gradio as gr

    c: dict = {}
    c["progress"] = gr.HTML("", elem_id=f"{tab}_progress", elem_classes=["atelier-progress-host"])
    c["preview"] = gr.Image(label="Preview", visible=False, interactive=False, elem_id=f"{tab}_preview",
                            height=320, type="pil", format="png")
    c["gallery"] = gr.Gallery(label="Output", elem_id=f"{tab}_gallery", columns=4, height=460, format="png",
                              object_fit="contain", preview=True, interactive=False)
    with gr.Row():
        c["send_img2img"] = gr.Button("🖼️ Send to img2img", elem_id=f"{tab}_send_img2img", size="sm")
        c["send_inpaint"] = gr.Button("🎨 Send to inpaint", elem_id=f"{tab}_send_inpaint", size="sm")
        c["reuse"] = gr.Button("↙️ Reuse parameters", elem_id=f"{tab}_reuse_params", size="sm")
    c["info"] = gr.Textbox(label="Generation parameters", lines=4, max_lines=12, interactive=False,
                           elem_id=f"{tab}_info", buttons=["copy"])
    # Per-user values: the last results ([{path, infotext, seed}]), which one is selected, the running job.
    c["results"] = gr.State([])
    c["selected"] = gr.State(0)
    c["job_id"] = gr.State(None)
    c["last_seed"] = gr.State(-1)
    return c


def fields_from_infotext(text: str, styles=None) -> dict:
    """Infotext → request fields, the one conversion behind Reuse parameters and PNG Info. With the
    studio's StyleStore, styles found in the prompts come back as `styles` (A1111's "Apply if any")."""
    parsed = infotext_mod.parse_with_styles(text or "", styles) if styles is not None else infotext_mod.parse(text or "")
    return infotext_mod.to_request_fields(parsed)


def updates_for_fields(fields: dict, comps: dict) -> dict:
    """Request fields → {component: value} for the components a tab has."""
    out = {}
    for name, value in fields.items():
        comp = comps.get(name)
        if comp is None or name in ("override_settings",):
            continue
        out[comp] = value
    if "seed_extra" in comps and ("subseed" in fields or "subseed_strength" in fields):
        out[comps["seed_extra"]] = bool(fields.get("subseed_strength"))
    return out


def module_choices(studio) -> list[str]:
    """The names Forge's infotext gives the shared modules (file stems, folder names) in models/text_encoder and
    models/VAE, for the VAE / Text Encoder picker."""
    from modules.models.flow_files import TEXT_ENCODER_FOLDER

    names = []
    for folder in (studio.paths.models / TEXT_ENCODER_FOLDER, studio.paths.model_dir("vae")):
        if folder.is_dir():
            names += [child.name if child.is_dir() else child.stem for child in sorted(folder.iterdir())
                      if not child.name.startswith(".") and (child.is_dir() or child.suffix == ".safetensors")]
    return list(dict.fromkeys(names))


def checkpoint_arch(studio, name: str | None) -> str | None:
    """The architecture of the checkpoint `name` (sd1, sdxl, flux, …), None when there is no such file."""
    from modules.errors import AtelierError

    if not name:
        return None
    try:
        return studio.registry.get("checkpoint", name).arch
    except AtelierError:
        return None


def takes_modules(studio, name: str | None) -> bool:
    """Whether the checkpoint `name` is a Flux / SD3 file that takes the VAE / Text Encoder picker's modules."""
    from modules.errors import AtelierError
    from modules.models.flow_files import takes_modules as entry_takes_modules

    if not name:
        return False
    try:
        return entry_takes_modules(studio.registry.get("checkpoint", name))
    except AtelierError:
        return False


def wire_arch_fields(studio, checkpoint, tabs: dict[str, dict]) -> None:
    """The fields follow the top bar's checkpoint (chosen, or switched by the API), as Forge's UI presets do:
    Flux and SD3 hide tiling (not there for them yet) and take the Euler sampler; Flux shows
    Distilled CFG Scale and starts at CFG 1 (true CFG off); their files show the VAE / Text Encoder picker (each
    tab keeps the choice: with modules picked, a job loads it with them); back on a UNet checkpoint, CFG 1 goes
    back to 7."""
    import gradio as gr

    from modules.diffusion.flow import DISTILLED_CFG_DEFAULT, is_flow

    panels = [comps for comps in tabs.values() if "distilled_cfg_scale" in comps]
    if not panels:
        return
    last_arch = gr.State(checkpoint_arch(studio, active_checkpoint(studio)))
    inputs, outputs = [checkpoint, last_arch], [last_arch]
    for comps in panels:
        inputs += [comps["sampler_name"], comps["cfg_scale"]]
        outputs += [comps["distilled_cfg_scale"], comps["tiling"], comps["sampler_name"], comps["cfg_scale"],
                    comps["forge_modules"], comps["chosen_checkpoint"]]

    def follow(name, before, *values):
        arch = checkpoint_arch(studio, name)
        flow, modules = arch is not None and is_flow(arch), takes_modules(studio, name)
        updates: list = [arch]
        for comps, (sampler, cfg) in zip(panels, zip(values[0::2], values[1::2])):
            if arch == "flux" and before != "flux":
                cfg_update = gr.Slider(value=1)
            elif not flow and before is not None and is_flow(before) and cfg == 1:
                cfg_update = gr.Slider(value=7)
            else:
                cfg_update = gr.skip()
            # Hidden, it goes back to its default: the other checkpoints refuse any other distilled value.
            distilled = gr.Slider(visible=True) if arch == "flux" else gr.Slider(visible=False, value=DISTILLED_CFG_DEFAULT)
            updates += [distilled,
                        gr.Checkbox(visible=not flow, value=False) if flow else gr.Checkbox(visible=True),
                        gr.Dropdown(value="Euler") if flow and sampler != "Euler" else gr.skip(), cfg_update,
                        # Off a Flux / SD3 file the picker empties: the others refuse forge_additional_modules.
                        gr.Dropdown(visible=True) if modules else gr.Dropdown(visible=False, value=[]), name]
        return updates

    checkpoint.change(follow, inputs, outputs, queue=False, show_progress="hidden", api_visibility="private")
