"""Forge's pre-quantized bitsandbytes nf4 single files (lllyasviel's flux1-dev-bnb-nf4 and -v2): the transformer's
Linear weights stored as bitsandbytes' Params4bit state — `P.weight` (packed uint8), `P.weight.absmax`,
`P.weight.quant_map`, `P.weight.quant_state.bitsandbytes__nf4` (the packed JSON of QuantState.as_dict), and in v1
`P.weight.nested_absmax` / `P.weight.nested_quant_map` (double quantization) — the rest plain tensors.

They are dequantized here with bitsandbytes' own QuantState.from_dict + dequantize_4bit into the compute dtype, so
the ordinary BFL path (flux_layout, from_single_file) converts them, and then kept in nf4 by the load options'
layer swap (quant.py) or BitsAndBytesConfig (CUDA): Forge keeps these files in nf4, and a user picks one for its
memory — dequantized to bf16 the transformer would take 3.5 times the file. Re-quantizing at bitsandbytes'
blocksize 64 gives back the file's codes and absmax (every block's largest value dequantizes to ±absmax exactly,
in fp32), so without double quantization the weights run are the file's (tests/unit/test_flow_files.py).
"""
from __future__ import annotations

from modules.errors import ModelLoadError
from modules.models.detect import BNB_NF4_STATE as QUANT_STATE  # the key ending that marks one quantized weight

LABEL = "nf4 (pre-quantized)"  # the registry's and Models tab's name of the file's own quantization
# The tensors one quantized weight `P.weight` brings beside itself (nested_*: v1's double quantization).
_STATS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map", QUANT_STATE[1:])


def load_options(entry, options):
    """The options such a file loads with: nf4 when the user asked none (the file's own, as Forge keeps it);
    another quantization asked for (int8, fp4, nf4 double quant) is made from the dequantized weights."""
    if entry.metadata.get("quantization") != LABEL or options.quantization != "none":
        return options
    return options.model_copy(update={"quantization": "nf4"})


def dequantize_state(state: dict, dtype, file_name: str) -> dict:
    """`state` with every packed nf4 weight replaced by its dequantization in `dtype` and the quant-state tensors
    removed (in place); a weight whose quant state bitsandbytes cannot read is a ModelLoadError naming the file."""
    import bitsandbytes.functional as bnb_f

    for weight in [k[:-len(QUANT_STATE)] for k in state if k.endswith(QUANT_STATE)]:
        stats = {name: state.pop(f"{weight}.{name}") for name in _STATS if f"{weight}.{name}" in state}
        try:
            quant_state = bnb_f.QuantState.from_dict(stats, device="cpu")
            quant_state.dtype = dtype  # into the compute dtype at once: no rounding through the file's bf16
            state[weight] = bnb_f.dequantize_4bit(state[weight], quant_state)
        except Exception as exc:  # bad JSON, a missing tensor, a shape that does not fit the packed data
            raise ModelLoadError(f"{file_name}: the bitsandbytes nf4 weight {weight} cannot be read "
                                 f"({type(exc).__name__}: {str(exc)[:200]}); the file is damaged — download it "
                                 "again", "file") from None
    return state
