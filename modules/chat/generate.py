"""One generation on the job worker: prompt tokens in, the reply's text, counts and timings out.

transformers' own pieces do the work: `generate` with a streamer (stream.py), stopping criteria
(interrupt; `stop_strings`), the model's EOS ids plus `<end_of_turn>`, a logits processor for
structured output (structured.py), and a DynamicCache holding the conversation's prefix (cache.py).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from modules.chat.stream import ReplyText, TokenClock, interrupt_criteria, streamer

if TYPE_CHECKING:
    from modules.chat.cache import PrefixCache
    from modules.chat.params import Sampling
    from modules.chat.prompt import Prompt
    from modules.chat.structured import GrammarTokenizers
    from modules.models.hf import LanguageModel

END_OF_TURN = "<end_of_turn>"  # Gemma's end of a turn; generation_config lists it for the -it models, not always


@dataclass
class Generation:
    text: str
    token_ids: list[int]  # generated, the final EOS included when there was one
    completion_tokens: int  # generated tokens, a final EOS not counted
    stopped_by: str  # "eos", "stop_string", "length", "interrupt"
    seed: int
    cached_tokens: int
    time_to_first_token: float | None
    tokens_per_second: float | None


def eos_ids(lm: "LanguageModel") -> list[int]:
    """Every id that ends a reply: the generation config's, the tokenizer's EOS and <end_of_turn>."""
    ids: list[int] = []
    configured = getattr(lm.model.generation_config, "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured] if configured is not None else []
    if lm.tokenizer.eos_token_id is not None:
        ids.append(lm.tokenizer.eos_token_id)
    # convert_tokens_to_ids, not get_vocab(): building a 262k-entry dict costs most of a second per reply.
    turn = lm.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(turn, int) and turn != lm.tokenizer.unk_token_id:
        ids.append(turn)
    return list(dict.fromkeys(int(i) for i in ids))


def sampling_kwargs(req: "Sampling") -> dict:
    if req.greedy:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": req.temperature, "top_p": req.top_p,
            "top_k": req.top_k or None, "min_p": req.min_p or None}


def run_generation(lm: "LanguageModel", prompt: "Prompt", req: "Sampling", *, emit: Callable[[str], None],
                   interrupted: Callable[[], bool], started: float, prefix: "PrefixCache | None",
                   cache_key: tuple, grammars: "GrammarTokenizers") -> Generation:
    import torch

    from modules.chat import structured

    model, tok = lm.model, lm.tokenizer
    eos = eos_ids(lm)
    seed = req.seed if req.seed >= 0 else random.randrange(2**32)
    max_new = max(1, min(req.max_new_tokens, prompt.context_length - len(prompt)))
    reply, clock = ReplyText(req.stop, emit), TokenClock(started)
    criteria = [interrupt_criteria(interrupted)]
    grammar = structured.logits_processor(req.response_format, lm, grammars, eos)
    reuse = prefix.take(cache_key, model, prompt.input_ids, prompt.image_token_id) if prefix is not None else None
    device = model.device
    ids = torch.tensor([prompt.input_ids], device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    inputs.update(_model_inputs(prompt, reuse.image_from if reuse else 0, device, model.dtype))
    kwargs = dict(sampling_kwargs(req), max_new_tokens=max_new, eos_token_id=eos,
                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
                  repetition_penalty=req.repetition_penalty if req.repetition_penalty != 1.0 else None,
                  stopping_criteria=criteria, streamer=streamer(tok, reply, clock))
    if req.stop:
        kwargs.update(stop_strings=list(req.stop), tokenizer=tok)
    if grammar is not None:
        kwargs["logits_processor"] = [grammar]
    if reuse is not None:
        kwargs["past_key_values"] = reuse.cache
    torch.manual_seed(seed)  # generate() samples from torch's global generator; there is no generator argument
    with torch.inference_mode():
        out = model.generate(**inputs, **kwargs)
    reply.finish()
    new = out[0, len(prompt):].tolist()
    if reuse is not None:
        prefix.put(cache_key, model, prompt.input_ids + new, reuse.cache)
    ended_on_eos = bool(new) and new[-1] in eos
    if reply.stopped:
        why = "stop_string"
    elif ended_on_eos:
        why = "eos"
    elif interrupted():
        why = "interrupt"
    else:
        why = "length" if len(new) >= max_new else "eos"
    return Generation(text=reply.text, token_ids=new, completion_tokens=len(new) - int(ended_on_eos),
                      stopped_by=why, seed=seed, cached_tokens=reuse.reused if reuse else 0,
                      time_to_first_token=clock.time_to_first_token, tokens_per_second=clock.tokens_per_second)


def _model_inputs(prompt: "Prompt", image_from: int, device, dtype) -> dict:
    """pixel_values of the images not already inside the reused prefix; the rest as the processor made it."""
    out = {}
    for name, value in prompt.model_inputs.items():
        if name == "pixel_values":
            value = value[image_from:]
            if value.shape[0] == 0:
                continue
            value = value.to(device=device, dtype=dtype)
        else:
            value = value.to(device)
        out[name] = value
    return out
