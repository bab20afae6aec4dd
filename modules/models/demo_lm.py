"""Tiny language and vision-language models with random weights, built offline from the real classes.

The studio builds them when models/LLM or models/VLM is empty, and the tests build the same
folders: a Gemma 2 chat model, a Gemma 3 image+text model and a PaliGemma. Each is saved
with save_pretrained (config.json, safetensors, tokenizer files with the model's own chat
template), so it loads through hf.TransformersAdapter exactly as a downloaded model does.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from modules.paths import DataPaths

DEMO_LLM_NAME = "atelier-demo-gemma2"
DEMO_VLM_NAME = "atelier-demo-gemma3"
DEMO_PALIGEMMA_NAME = "atelier-demo-paligemma"
MARKER = "ATELIER_DEMO.txt"  # the same marker file demo.py writes into the SD demo
DEMO_NOTE = (
    "This is one of Atelier's built-in demo models: random weights, so it answers with gibberish. "
    "Put a real model folder (for example google/gemma-2-2b-it, google/gemma-3-4b-it or "
    "google/paligemma2-3b-mix-224) into models/LLM or models/VLM and press Refresh."
)

# Gemma 2's chat template as google/gemma-2-2b-it ships it (no system role: it raises).
GEMMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# Gemma 3's chat template as google/gemma-3-4b-it ships it: the system prompt is folded into the
# first user turn, content may be a list of parts, an image part becomes <start_of_image>.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)

_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]  # Gemma's ids 0..3 first
_GEMMA3_IMAGE_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                        "image_token": "<image_soft_token>"}
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A studio makes pictures, answers questions and reads text. "
    "user model assistant system hello world: what is in this image? caption describe detect segment ocr answer "
    "en fr de es {\"name\": \"value\", \"count\": 42, \"ok\": true} [1, 2, 3] 0123456789 <loc> <seg>"
).split(". ")


def gemma_tokenizer(vocab_size: int, extra_specials: list[str] = (), chat_template: str | None = None,
                     named: dict | None = None):
    """A byte-level BPE tokenizer with Gemma's special tokens; every byte is a token, so any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS + list(extra_specials)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"] if not named else None,
        extra_special_tokens=named, chat_template=chat_template, padding_side="left", add_bos_token=True,
        model_max_length=8192,
    )


def _text_sizes(vocab_size: int, tok) -> dict:
    """The tiny decoder every demo shares: 2 layers, width 64; ids from the tokenizer."""
    return dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _siglip(image_size: int, patch: int = 14):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=patch, vision_use_head=False)


def build_gemma2(folder: Path, seed: int = 0) -> None:
    """Gemma2ForCausalLM with Gemma 2's chat template; eos stops at <eos> and <end_of_turn>."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM, GenerationConfig

    tok = gemma_tokenizer(400, chat_template=GEMMA2_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    sizes = _text_sizes(len(tok), tok)
    model = Gemma2ForCausalLM(Gemma2Config(**sizes, sliding_window=4096))
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")])
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))


def build_gemma3_vlm(folder: Path, seed: int = 0) -> None:
    """Gemma3ForConditionalGeneration + Gemma3Processor: a SigLIP tower of 64x64 images, 4 image tokens."""
    import torch
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor,
                              Gemma3TextConfig, GenerationConfig)

    tok = gemma_tokenizer(400, extra_specials=list(_GEMMA3_IMAGE_TOKENS.values()),
                           chat_template=GEMMA3_CHAT_TEMPLATE, named=_GEMMA3_IMAGE_TOKENS)
    image_size, patch, tokens_per_image = 56, 14, 4  # 4x4 patches pooled to 2x2 = 4 soft tokens
    torch.manual_seed(seed)
    text = Gemma3TextConfig(**_text_sizes(len(tok), tok), sliding_window=512)
    config = Gemma3Config(text_config=text, vision_config=_siglip(image_size, patch),
                          mm_tokens_per_image=tokens_per_image,
                          boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                          eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                          image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"))
    model = Gemma3ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")])
    images = Gemma3ImageProcessor(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=images, tokenizer=tok, chat_template=GEMMA3_CHAT_TEMPLATE,
                                image_seq_length=tokens_per_image)
    model.save_pretrained(str(folder), safe_serialization=True)
    processor.save_pretrained(str(folder))


def build_paligemma(folder: Path, seed: int = 0) -> None:
    """PaliGemmaForConditionalGeneration + PaliGemmaProcessor (<image>, <loc0000>…<loc1023>, <seg000>…<seg127>)."""
    import torch
    from transformers import (GemmaConfig, GenerationConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration,
                              PaliGemmaProcessor, SiglipImageProcessor)

    image_size, patch = 56, 14  # 16 patches = 16 image tokens
    tok = gemma_tokenizer(400)
    images = SiglipImageProcessor(size={"height": image_size, "width": image_size},
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    images.image_seq_length = (image_size // patch) ** 2  # PaliGemmaProcessor refuses an image processor without it
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tok)  # adds <image> and the loc/seg tokens
    tok = processor.tokenizer
    torch.manual_seed(seed)
    text = GemmaConfig(**_text_sizes(len(tok), tok))
    config = PaliGemmaConfig(text_config=text, vision_config=_siglip(image_size, patch), projection_dim=64,
                             image_token_index=processor.image_token_id)
    config.text_config.num_image_tokens = images.image_seq_length
    model = PaliGemmaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                                               eos_token_id=tok.eos_token_id)
    model.save_pretrained(str(folder), safe_serialization=True)
    processor.save_pretrained(str(folder))


# kind, name, builder: what ensure_demo_language_models builds into an empty models/LLM or models/VLM.
DEMOS: tuple[tuple[str, str, Callable[[Path, int], None]], ...] = (
    ("llm", DEMO_LLM_NAME, build_gemma2),
    ("vlm", DEMO_VLM_NAME, build_gemma3_vlm),
    ("vlm", DEMO_PALIGEMMA_NAME, build_paligemma),
)


def save_demo(builder: Callable[[Path, int], None], folder: Path, seed: int = 0) -> Path:
    """Build into a hidden temporary folder and rename it: the folder appears whole or not at all."""
    folder = Path(folder)
    tmp = folder.with_name("." + folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    builder(tmp, seed)
    (tmp / MARKER).write_text(DEMO_NOTE + "\n", encoding="utf-8")
    tmp.rename(folder)
    return folder


def _has_model(folder: Path) -> bool:
    return folder.is_dir() and any(not p.name.startswith(".") and ((p / "config.json").exists()
                                                                   or p.suffix.lower() == ".gguf")
                                   for p in folder.iterdir())


def ensure_demo_language_models(paths: "DataPaths") -> list[Path]:
    """Build the demos of each kind whose folder holds no model yet; returns the folders built or found."""
    out = []
    empty = {kind: not _has_model(paths.model_dir(kind)) for kind in {k for k, _, _ in DEMOS}}
    for kind, name, builder in DEMOS:
        folder = paths.model_dir(kind) / name
        if folder.exists():
            out.append(folder)
        elif empty[kind]:
            folder.parent.mkdir(parents=True, exist_ok=True)
            out.append(save_demo(builder, folder))
    return out


def is_demo(path: Path) -> bool:
    return (Path(path) / MARKER).exists()
