"""A random-weights GFPGANv1.4 network in its own key layout, for the tests and the benchmark: spandrel
detects and loads it like a downloaded GFPGANv1.4.pth. fp16 on disk (half of the 345 MB of fp32; spandrel
loads it into its fp32 network)."""
from __future__ import annotations


def gfpgan_state_dict(seed: int = 0) -> dict:
    """spandrel's own GFPGANv1Clean with GFPGANv1.4's configuration (what its detection builds), randomly
    initialised: every key and shape of the real file."""
    import torch

    from modules.models.spandrel_registry import arch_registry

    arch_registry()  # spandrel's package without the torchvision-needing __init__, where it fails
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                 num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    return {k: v.half().contiguous() for k, v in net.state_dict().items()}
