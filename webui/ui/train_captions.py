"""The Train tab's dataset caption editor: upload images into a new or existing folder under
datasets/ in the data dir, see them in a gallery, pick one, edit its `.txt` caption, save. The file
work (paths kept inside datasets/, atomic writes) is modules/training/captions.py."""
# (no `from __future__ import annotations`: Gradio reads the gr.SelectData hint at wiring time)

from modules.errors import AtelierError
from modules.training import captions


def build(studio) -> dict:
    import gradio as gr

    root = studio.paths.root
    c: dict = {}
    with gr.Row(equal_height=False):
        c["folder"] = gr.Dropdown(captions.folders(root), value=None, allow_custom_value=True,
                                  label="Dataset folder under datasets/ (pick one, or type a new name, "
                                        "e.g. my-cat/10_my cat for 10 repeats)",
                                  elem_id="train_captions_folder", scale=4)
        c["refresh"] = gr.Button("🔄", elem_id="train_captions_refresh", size="sm", scale=0, min_width=50)
    c["upload"] = gr.File(label="Add images to this folder", file_count="multiple", file_types=["image"],
                          type="filepath", elem_id="train_captions_upload")
    with gr.Row(equal_height=False):
        c["gallery"] = gr.Gallery([], label="Images", columns=6, height=360, allow_preview=False,
                                  elem_id="train_captions_gallery", scale=3)
        with gr.Column(scale=2):
            c["image"] = gr.Textbox("", label="Image", interactive=False, elem_id="train_captions_image")
            c["caption"] = gr.Textbox("", label="Caption (.txt beside the image)", lines=4,
                                      elem_id="train_captions_caption")
            c["save"] = gr.Button("💾 Save caption", variant="primary", elem_id="train_captions_save")
            c["status"] = gr.Markdown("", elem_id="train_captions_status")

    def listing(name):
        """The folder's images (path, caption) for the gallery; nothing when no folder is chosen yet."""
        if not (name or "").strip():
            return []
        try:
            folder = captions.folder_path(root, name)
        except AtelierError:
            return []  # a new name, not created until images are added
        return [(str(p), captions.caption_of(p) or p.name) for p in captions.images(folder)]

    def choose(name):
        return listing(name), "", "", ""

    c["folder"].change(choose, [c["folder"]], [c["gallery"], c["image"], c["caption"], c["status"]], queue=False,
                       api_visibility="private")

    def refresh(name):
        return gr.Dropdown(choices=captions.folders(root), value=name), listing(name)

    c["refresh"].click(refresh, [c["folder"]], [c["folder"], c["gallery"]], queue=False, api_visibility="private")

    def add(name, files):
        if not files:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            folder = captions.folder_path(root, name, create=True)
            written = captions.add_images(folder, [f if isinstance(f, str) else f.name for f in files])
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Images not added") from None
        return (gr.Dropdown(choices=captions.folders(root), value=name), listing(name), None,
                f"Added {len(written)} image(s) to datasets/{name.strip().rstrip('/')}.")

    c["upload"].upload(add, [c["folder"], c["upload"]], [c["folder"], c["gallery"], c["upload"], c["status"]],
                       api_visibility="private")

    def pick(name, evt: gr.SelectData):
        items = listing(name)
        if evt.index is None or evt.index >= len(items):
            return "", ""
        path = items[evt.index][0]
        image = path.rsplit("/", 1)[-1]
        folder = captions.folder_path(root, name)
        return image, captions.caption_of(folder / image)

    c["gallery"].select(pick, [c["folder"]], [c["image"], c["caption"]], queue=False, api_visibility="private")

    def save(name, image, caption):
        if not image:
            raise gr.Error("Pick an image in the gallery first")
        try:
            written = captions.write_caption(captions.folder_path(root, name), image, caption)
        except AtelierError as exc:
            raise gr.Error(str(exc), title="Caption not saved") from None
        return listing(name), f"Saved {written.name}."

    c["save"].click(save, [c["folder"], c["image"], c["caption"]], [c["gallery"], c["status"]], queue=False,
                    api_visibility="private")
    return c
