"""The SD training data in the training process: images resized into their buckets, the per-epoch
batch order, and the latent / text-encoder caches.

A sample is one repeat of one image; batches are made within a bucket and shuffled with a
generator seeded from (seed, epoch), so the order is a function of the step — what a resume needs.
Caching encodes each image (and caption) once; a cached latent is the VAE's distribution, sampled
each step as the uncached path samples it, so caching changes the speed and not the training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from modules.training.buckets import bucket_for, crop_box
from modules.training.dataset import DatasetItem, DatasetScan


@dataclass(frozen=True)
class Sample:
    item: int  # index into the dataset's items
    bucket: tuple[int, int]  # (width, height)


class SdDataset:
    """Items that load, their buckets, and the samples (repeats) of one epoch."""

    def __init__(self, scan: DatasetScan, resolution: int, bucketing: bool, log):
        from PIL import Image

        self.folder = scan.folder
        self.items: list[DatasetItem] = []
        for item in scan.items:  # the server read headers; a file broken past its header fails only here
            try:
                with Image.open(self.folder / item.path) as image:
                    image.load()
            except Exception as exc:  # any decoder error: this image is skipped, the rest train
                log(f"skipped {item.path}: unreadable ({type(exc).__name__})")
                continue
            self.items.append(item)
        self.buckets = [bucket_for(i.width, i.height, resolution, bucketing) for i in self.items]
        self.samples = [Sample(n, self.buckets[n]) for n, item in enumerate(self.items) for _ in range(item.repeats)]

    def pixels(self, n: int):
        """(3, h, w) in [-1, 1], and SDXL's size conditioning (orig h, orig w, crop top, crop left, h, w)."""
        import numpy as np
        import torch
        from PIL import Image, ImageOps

        with Image.open(self.folder / self.items[n].path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
        (rw, rh), (top, left) = crop_box(image.width, image.height, self.buckets[n])
        bw, bh = self.buckets[n]
        resized = image.resize((rw, rh), Image.Resampling.LANCZOS).crop((left, top, left + bw, top + bh))
        array = np.asarray(resized, dtype=np.float32) / 127.5 - 1.0
        time_ids = (image.height, image.width, top, left, bh, bw)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous(), time_ids


class BucketBatchSampler:
    """Batches of sample indices, each from one bucket; the order is fixed by (seed, epoch)."""

    def __init__(self, samples: list[Sample], batch_size: int, seed: int):
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.by_bucket: dict[tuple[int, int], list[int]] = {}
        for index, sample in enumerate(samples):
            self.by_bucket.setdefault(sample.bucket, []).append(index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        import torch

        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        batches = []
        for bucket in sorted(self.by_bucket):
            members = self.by_bucket[bucket]
            order = torch.randperm(len(members), generator=generator).tolist()
            shuffled = [members[i] for i in order]
            batches += [shuffled[i:i + self.batch_size] for i in range(0, len(shuffled), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return sum(math.ceil(len(m) / self.batch_size) for m in self.by_bucket.values())


def make_loader(dataset: SdDataset, sampler: BucketBatchSampler):
    """A DataLoader of sample-index batches; accelerate shards it over the processes."""
    from torch.utils.data import DataLoader

    return DataLoader(range(len(dataset.samples)), batch_sampler=sampler, collate_fn=list, num_workers=0)


class LatentSource:
    """Latents of a batch: from the cache (the VAE's distribution per image), or encoded now."""

    def __init__(self, dataset: SdDataset, vae, device, cache: bool):
        self.dataset, self.vae, self.device, self.cache = dataset, vae, device, cache
        self.params: dict[int, object] = {}
        self.time_ids: dict[int, tuple] = {}

    def prepare(self, log) -> None:
        import torch

        for n in range(len(self.dataset.items)):
            pixels, self.time_ids[n] = self.dataset.pixels(n)
            if self.cache:
                with torch.no_grad():
                    dist = self.vae.encode(pixels[None].to(self.device, torch.float32)).latent_dist
                self.params[n] = dist.parameters.cpu()
        if self.cache:
            log(f"cached the latents of {len(self.params)} images")

    def latents(self, items: list[int], generator, dtype):
        import torch
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if self.cache:
            dist = DiagonalGaussianDistribution(torch.cat([self.params[n] for n in items]))
        else:
            pixels = torch.stack([self.dataset.pixels(n)[0] for n in items]).to(self.device, torch.float32)
            with torch.no_grad():
                dist = self.vae.encode(pixels).latent_dist
            dist = DiagonalGaussianDistribution(dist.parameters.cpu())
        latents = dist.sample(generator=generator) * self.vae.config.scaling_factor
        return latents.to(self.device, dtype)

    def sizes(self, items: list[int], device, dtype):
        import torch

        return torch.tensor([self.time_ids[n] for n in items], device=device, dtype=dtype)


class TextSource:
    """Text conditioning of a batch: cached per caption when the text encoders are not trained."""

    def __init__(self, parts, dataset: SdDataset, device, cache: bool):
        self.parts, self.dataset, self.device, self.cache = parts, dataset, device, cache
        self.cached: dict[str, tuple] = {}

    def prepare(self, log) -> None:
        import torch

        from modules.training.sd_model import encode_text, tokenize

        if not self.cache:
            return
        for caption in sorted({item.caption for item in self.dataset.items}):
            with torch.no_grad():
                hidden, pooled = encode_text(self.parts, self.parts.text_encoders, tokenize(self.parts, [caption]),
                                             self.device)
            self.cached[caption] = (hidden.cpu(), None if pooled is None else pooled.cpu())
        log(f"cached the text-encoder outputs of {len(self.cached)} captions")

    def conditioning(self, items: list[int], encoders, dtype):
        import torch

        from modules.training.sd_model import encode_text, tokenize

        captions = [self.dataset.items[n].caption for n in items]
        if self.cache:
            hidden = torch.cat([self.cached[c][0] for c in captions]).to(self.device, dtype)
            pooled = (torch.cat([self.cached[c][1] for c in captions]).to(self.device, dtype)
                      if self.parts.is_sdxl else None)
            return hidden, pooled
        hidden, pooled = encode_text(self.parts, encoders, tokenize(self.parts, captions), self.device)
        return hidden.to(dtype), None if pooled is None else pooled.to(dtype)
