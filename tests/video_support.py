"""Test videos made in the test: a coloured rectangle moving across a grey frame, encoded with PyAV."""
from __future__ import annotations

import base64
import io
from fractions import Fraction

RECT = 16  # the rectangle's side in pixels
RED = (220, 30, 30)


def rectangle_frames(count: int = 30, size: tuple[int, int] = (96, 64), step: int = 2):
    """PIL frames: a RECT x RECT red rectangle moving `step` pixels right per frame on grey."""
    from PIL import Image, ImageDraw

    out = []
    for i in range(count):
        image = Image.new("RGB", size, (128, 128, 128))
        x = 4 + step * i
        ImageDraw.Draw(image).rectangle([x, 24, x + RECT - 1, 24 + RECT - 1], fill=RED)
        out.append(image)
    return out


def encode(images, fps: int = 10, fmt: str = "mp4", codec: str = "libx264") -> bytes:
    """The frames as a video file's bytes (H.264 MP4 by default; e.g. fmt="webm", codec="libvpx-vp9")."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = images[0].width, images[0].height, "yuv420p"
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def rectangle_video(count: int = 30, fps: int = 10, **kwargs) -> bytes:
    return encode(rectangle_frames(count, **kwargs), fps=fps)


def b64_video(data: bytes) -> str:
    return base64.b64encode(data).decode()


# A YOLOv8 detector whose weights are set by hand, not learnt: one 15x15 convolution measures "redness"
# (R - (G + B) / 2, averaged over the window: highest at a 16-pixel rectangle's centre), the Detect head
# passes it through unchanged into the class logit (steep, so only anchors at the centre pass conf 0.5) and
# regresses a fixed 16x16 box (DFL bin 8 on each side) around each anchor. A real ultralytics .pt of a real
# Detect head, which the worker loads, predicts and tracks like any other: it finds red rectangles, exactly.
RED_DETECTOR = '''
import sys, torch, numpy as np
from PIL import Image, ImageDraw
from ultralytics import YOLO
open("red.yaml", "w").write("nc: 1\\nbackbone:\\n  - [-1, 1, Conv, [4, 15, 1]]\\nhead:\\n  - [[0], 1, Detect, [nc]]\\n")
model = YOLO("red.yaml")
net = model.model
conv0, head = net.model[0], net.model[1]
with torch.no_grad():
    for mod in net.modules():
        if isinstance(mod, torch.nn.Conv2d) and mod is not head.dfl.conv:
            mod.weight.zero_()
            if mod.bias is not None:
                mod.bias.zero_()
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.fill_(1); mod.bias.zero_(); mod.running_mean.zero_(); mod.running_var.fill_(1 - mod.eps)
    conv0.conv.weight[0] = torch.tensor([1.0, -0.5, -0.5]).view(3, 1, 1).expand(3, 15, 15) / 225
    for i in (0, 1):
        head.cv3[0][i].conv.weight[0, 0, 1, 1] = 1
    for side in range(4):
        head.cv2[0][2].bias[side * 16 + 8] = 30.0
    seen = {}
    hook = head.cv3[0][2].register_forward_pre_hook(lambda mod, inp: seen.__setitem__("s", inp[0][0, 0].max()))
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(image).rectangle([20, 20, 35, 35], fill=(220, 30, 30))
    net.eval()
    net(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255)
    hook.remove()
    head.cv3[0][2].weight[0, 0] = 40 / float(seen["s"])  # logit 4 at the centre, below 0 a few pixels off
    head.cv3[0][2].bias[0] = -36.0
net.names = {0: "rectangle"}
model.save(sys.argv[1])
'''


def red_detector_code(path) -> str:
    """Python for the worker's interpreter that writes the red-rectangle detector to `path`."""
    return RED_DETECTOR.replace("sys.argv[1]", repr(str(path)))
