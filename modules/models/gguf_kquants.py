"""GGUF's Q4_K and Q5_K quantization in numpy, for the demo's GGUF files.

Hand-written because the gguf package (0.19) dequantizes K-quants but has no quantizer for them
(`gguf.quants.quantize` raises NotImplementedError); its dequantizer checks this packing
(tests/unit/test_flow_files.py). A plain min/max fit per 32-value sub-block — not llama.cpp's search for
the best scales: good enough for test files, not for shrinking a real model.
"""
from __future__ import annotations

QK_K = 256  # values per super-block


def quantize(data, kind):
    """`data` (rows × columns, float32) in GGUF type `kind` (a GGMLQuantizationType), as gguf's quantize."""
    import gguf

    if kind.name == "Q4_K":
        return _k_quant(data, bits=4)
    if kind.name == "Q5_K":
        return _k_quant(data, bits=5)
    return gguf.quants.quantize(data, kind)


def _pack_scales(sc, mn):
    """Eight 6-bit scales and mins per block → the 12 bytes gguf's Q4_K.get_scale_min unpacks."""
    import numpy as np

    low_d = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    low_m = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    high = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return np.concatenate([low_d, low_m, high], axis=1).astype(np.uint8)


def _k_quant(data, bits: int):
    import numpy as np

    rows, cols = data.shape
    x = data.astype(np.float32).reshape(-1, 8, 32)  # blocks × sub-blocks × values
    top = (1 << bits) - 1
    offset = np.maximum(-x.min(axis=2), 0.0)  # value = scale * q - offset
    scale = (x.max(axis=2) + offset) / top
    d = (scale.max(axis=1) / 63).astype(np.float16)
    dmin = (offset.max(axis=1) / 63).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.clip(np.round(np.divide(scale, d32, out=np.zeros_like(scale), where=d32 > 0)), 0, 63).astype(np.uint8)
    mn = np.clip(np.round(np.divide(offset, dmin32, out=np.zeros_like(offset), where=dmin32 > 0)), 0, 63).astype(np.uint8)
    step = (d32 * sc)[:, :, None]
    low = (dmin32 * mn)[:, :, None]
    q = np.clip(np.round(np.divide(x + low, step, out=np.zeros_like(x), where=step > 0)), 0, top).astype(np.uint8)
    nibbles = (q & 0x0F).reshape(-1, 4, 2, 32)
    qs = (nibbles[:, :, 0] | (nibbles[:, :, 1] << 4)).reshape(-1, 128)
    parts = [d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), _pack_scales(sc, mn)]
    if bits == 5:
        high = (q >> 4).reshape(-1, 8, 32)
        qh = np.zeros((high.shape[0], 32), dtype=np.uint8)
        for k in range(8):
            qh |= (high[:, k] << k).astype(np.uint8)
        parts.append(qh)
    parts.append(qs.astype(np.uint8))
    return np.concatenate(parts, axis=1).reshape(rows, -1)
