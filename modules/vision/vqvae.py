"""PaliGemma's mask decoder: big_vision's VQ-VAE (vae-oid.npz) in torch, no JAX.

The 16 `<seg>` codes of an object pick 16 vectors of a 128-entry codebook (`_vq_vae._embedding`,
128 x D), laid out as a 4x4 grid; the decoder turns the grid into a 64x64 map in [-1, 1]
(> 0 is the object). The file is a PyTorch state dict saved with numpy, so the torch module below
is the original layout: its parameter names are the file's keys (`decoder.0.weight`, …, see
big_vision/evaluators/proj/paligemma/transfers/segmentation.py), and it loads with load_state_dict:

  decoder.0          1x1 conv, D → 128, ReLU
  decoder.2 / .3     residual blocks: .net.0 3x3, ReLU, .net.2 3x3, ReLU, .net.4 1x1 (128 → 128) + input
  decoder.4/6/8/10   4x4 transposed convs, stride 2 (flax padding 2 = torch padding 1), each doubling the
                     side 4 → 8 → 16 → 32 → 64, channels 128 → 128 → 64 → 32 → 16, ReLU after each
  decoder.12         1x1 conv, 16 → 1
"""
from __future__ import annotations

from pathlib import Path

from modules.errors import InvalidRequest, ModelLoadError

FILE_NAME = "vae-oid.npz"
CODEBOOK_KEY = "_vq_vae._embedding"
DEMO_KEY = "atelier_demo"  # present only in the random-weights decoder the demo and the tests write
CODEBOOK_SIZE = 128
HIDDEN = 128
UPSAMPLE_CHANNELS = (128, 128, 64, 32, 16)
MASK_SIDE = 64


def missing_message(folder: Path) -> str:
    return (f"segmentation needs PaliGemma's mask decoder {FILE_NAME} (big_vision's VQ-VAE, "
            f"gs://big_vision/paligemma/{FILE_NAME}); put it into models/{folder.name}/ ({folder}) and try again")


def build_module(embedding_dim: int):
    """The decoder as an nn.Sequential whose state-dict names are vae-oid.npz's decoder keys."""
    from torch import nn

    class ResBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(HIDDEN, HIDDEN, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(HIDDEN, HIDDEN, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(HIDDEN, HIDDEN, 1))

        def forward(self, x):
            return x + self.net(x)

    layers: list = [nn.Conv2d(embedding_dim, HIDDEN, 1), nn.ReLU(), ResBlock(), ResBlock()]
    for c_in, c_out in zip(UPSAMPLE_CHANNELS, UPSAMPLE_CHANNELS[1:]):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(UPSAMPLE_CHANNELS[-1], 1, 1))
    decoder = nn.Module()
    decoder.decoder = nn.Sequential(*layers)
    return decoder


class MaskDecoder:
    """The codebook and the decoder of one vae-oid.npz, on the CPU (about 2 M parameters: a 4x4 grid is cheap)."""

    def __init__(self, path: Path):
        import numpy as np
        import torch

        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:  # plain arrays only: loading runs no code
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path.name} is not a readable .npz file ({exc}); download it again", "model") from None
        if CODEBOOK_KEY not in arrays or arrays[CODEBOOK_KEY].ndim != 2:
            raise ModelLoadError(f"{path.name} has no {CODEBOOK_KEY} codebook: it is not big_vision's {FILE_NAME}",
                                 "model")
        self.demo = DEMO_KEY in arrays
        codebook = torch.from_numpy(arrays[CODEBOOK_KEY].astype("float32"))
        self.module = build_module(codebook.shape[1]).eval()
        weights = {k: torch.from_numpy(v.astype("float32")) for k, v in arrays.items() if k.startswith("decoder.")}
        try:
            self.module.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{path.name}: its decoder weights do not have big_vision's layout "
                                 f"({str(exc)[:300]})", "model") from None
        self.codebook = codebook

    def decode(self, codes):
        """codes: [N, 16] ints in 0..127 → [N, 64, 64] float32 numpy maps in about [-1, 1]."""
        import numpy as np
        import torch

        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64)).reshape(-1, 16)
        if codes.numel() == 0:
            return np.zeros((0, MASK_SIDE, MASK_SIDE), np.float32)
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook.shape[0]:
            raise InvalidRequest(f"segmentation codes must be in 0..{self.codebook.shape[0] - 1}", "codes")
        grid = self.codebook[codes].reshape(-1, 4, 4, self.codebook.shape[1]).permute(0, 3, 1, 2)  # NHWC → NCHW
        with torch.inference_mode():
            out = self.module.decoder(grid)
        return out[:, 0].numpy()


def write_random_decoder(path: Path, embedding_dim: int = 512, seed: int = 0) -> Path:
    """A decoder file with vae-oid.npz's keys and shapes and random weights (the demo's and the tests').

    Written to a temporary name and renamed, so a reader never sees half a file."""
    import os

    import numpy as np
    import torch

    path = Path(path)
    torch.manual_seed(seed)
    module = build_module(embedding_dim)
    arrays = {f"{k}": v.detach().numpy() for k, v in module.state_dict().items()}
    rng = np.random.default_rng(seed)
    arrays[CODEBOOK_KEY] = rng.standard_normal((CODEBOOK_SIZE, embedding_dim)).astype("float32")
    arrays[DEMO_KEY] = np.array(1, dtype=np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.building.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


class DecoderCache:
    """The loaded decoder per file, read again when the file changes (owned by the vision services, not global)."""

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[float, MaskDecoder]] = {}

    def get(self, path: Path) -> MaskDecoder:
        path = Path(path)
        try:
            stamp = path.stat().st_mtime
        except FileNotFoundError:
            raise InvalidRequest(missing_message(path.parent), "task") from None
        with self._lock:
            held = self._loaded.get(str(path))
            if held is None or held[0] != stamp:
                held = (stamp, MaskDecoder(path))
                self._loaded[str(path)] = held
            return held[1]
