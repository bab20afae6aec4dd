"""Seed explorer: one prompt, several consecutive seeds, side by side.

Shows api.add_tab and api.txt2img. The tab's build function imports gradio itself
(extensions load before the UI exists, and must stay cheap to import).
"""

MAX_SEEDS = 8


def setup(api):
    def explore(prompt: str, negative: str, first_seed: float, count: float, steps: float, size: float):
        result = api.txt2img(prompt=prompt, negative_prompt=negative, seed=int(first_seed),
                             batch_size=max(1, min(MAX_SEEDS, int(count))), steps=int(steps),
                             width=int(size), height=int(size))
        return [(g.image, f"seed {g.seed}") for g in result.images]

    def build():
        import gradio as gr

        gr.Markdown("Render one prompt with consecutive seeds to pick the composition you like; "
                    "then reuse that seed in txt2img.")
        prompt = gr.Textbox(label="Prompt", lines=2, elem_id="seed_explorer_prompt")
        negative = gr.Textbox(label="Negative prompt", elem_id="seed_explorer_negative")
        with gr.Row():
            first = gr.Number(1, label="First seed", precision=0, minimum=0, elem_id="seed_explorer_seed")
            count = gr.Slider(1, MAX_SEEDS, value=4, step=1, label="Seeds", elem_id="seed_explorer_count")
            steps = gr.Slider(1, 50, value=20, step=1, label="Steps", elem_id="seed_explorer_steps")
            size = gr.Slider(64, 1024, value=512, step=64, label="Size", elem_id="seed_explorer_size")
        go = gr.Button("Explore seeds", variant="primary", elem_id="seed_explorer_go")
        gallery = gr.Gallery(label="Seeds", columns=4, elem_id="seed_explorer_gallery")
        # "gpu": the concurrency id every generating event shares, so the queues agree.
        go.click(explore, [prompt, negative, first, count, steps, size], [gallery], concurrency_id="gpu")
        return {"prompt": prompt, "go": go, "gallery": gallery}

    api.add_tab("Seed explorer", build, order=600)
