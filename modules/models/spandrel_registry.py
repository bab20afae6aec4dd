"""spandrel's architecture registry, with or without torchvision.

`import spandrel` imports every architecture it knows, and two of them (LaMa, RestoreFormer) import
torchvision at once: where torchvision cannot be imported (a `+cpu` torch beside PyPI's CUDA
torchvision), the whole library fails to import although the upscalers and GFPGAN never touch it.
There we import spandrel's package without its eager `__init__` and build an `ArchRegistry` of the
architectures that need no torchvision — spandrel's own classes and detection, nothing rewritten.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

# spandrel 0.4.2's MAIN_REGISTRY, in its order (the order detection tries them), less LaMa and
# RestoreFormer — the two that import torchvision.
_ARCHES = ("Compact", "SwiftSRGAN", "HAT", "GRL", "Swin2SR", "SwinIR", "GFPGAN", "OmniSR", "SCUNet", "FBCNN",
           "Uformer", "RGT", "DAT", "CRAFT", "KBNet", "DITN", "MMRealSR", "SPAN", "RealCUGAN", "SAFMN", "SAFMNBCIE",
           "DCTLSA", "FFTformer", "NAFNet", "ATD", "MixDehazeNet", "DRUNet", "DnCNN", "IPT", "DRCT", "ESRGAN", "PLKSR",
           "RetinexFormer", "HVICIDNet", "SeemoRe", "MoSR", "MoESR", "RCAN", "FDAT", "AuraSR")


def arch_registry():
    """The registry that detects and loads a state dict (spandrel's MAIN_REGISTRY when it imports)."""
    if _torchvision_imports():
        import spandrel

        return spandrel.MAIN_REGISTRY
    return _registry_without_torchvision()


def _torchvision_imports() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA build beside a +cpu torch raises RuntimeError (operator torchvision::nms)
        return False
    return True


def _registry_without_torchvision():
    if "spandrel" not in sys.modules:
        spec = importlib.util.find_spec("spandrel")
        if spec is None:
            raise ImportError("spandrel is not installed: pip install -r requirements.txt")
        sys.modules["spandrel"] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    from spandrel.__helpers.registry import ArchRegistry, ArchSupport

    registry = ArchRegistry()
    supports = []
    for name in _ARCHES:
        module = importlib.import_module(f"spandrel.architectures.{name}")
        arch_class = next(v for k, v in vars(module).items() if k.endswith("Arch") and isinstance(v, type)
                          and v.__module__ == module.__name__)
        supports.append(ArchSupport.from_architecture(arch_class()))
    registry.add(*supports)
    return registry
