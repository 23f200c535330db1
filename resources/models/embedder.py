"""Image embedder: one L2-normalised vector per frame, for near-duplicate search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from resources.models.base import ModelResource, cached, to_device
from resources.models.text_filter import TextImageFilter, load_siglip, prepare_siglip_images, siglip_image_embeddings

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class LoadedDino:
    model: Any
    processor: Any
    device: str
    dtype: Any


def load_image_processor(resource: ModelResource, model_id: str) -> Any:
    """The checkpoint's image processor; DINOv3's own needs torchvision, so fall back to the equivalent PIL one."""
    from transformers import AutoImageProcessor, BitImageProcessor

    try:
        return resource._load(AutoImageProcessor.from_pretrained, model_id)
    except (ImportError, ValueError):
        return resource._load(BitImageProcessor.from_pretrained, model_id)


class ImageEmbedder(ModelResource):
    """Embeds frames with DINOv2 / DINOv3 (the CLS token) or, to save memory, the filter's SigLIP image tower.

    ``siglip-image`` loads the same checkpoint as the text-image filter (``model_id`` defaults to the filter's
    default), and shares its weights when both run in one process.
    """

    backend: Literal["dinov2-base", "dinov2-large", "dinov3", "siglip-image"] = "dinov2-base"

    role: ClassVar[str] = "image embedder"
    setting: ClassVar[str] = "MINING_EMBEDDER_MODEL"
    default_models: ClassVar[dict[str, str]] = {
        "dinov2-base": "facebook/dinov2-base",
        "dinov2-large": "facebook/dinov2-large",
        "dinov3": "facebook/dinov3-vitb16-pretrain-lvd1689m",
        "siglip-image": TextImageFilter.default_models["siglip2-so400m"],
    }

    def load(self) -> Any:
        model_id = self.resolved_model_id()
        if self.backend == "siglip-image":
            return load_siglip(self, model_id)

        def build() -> LoadedDino:
            from transformers import AutoModel

            processor = load_image_processor(self, model_id)
            model = self._place(self._load(AutoModel.from_pretrained, model_id))
            return LoadedDino(model, processor, self.resolved_device(), self.dtype())

        return cached(self.cache_key("dino", model_id), build)

    def prepare(self, images: list[Image.Image]) -> dict[str, Any]:
        loaded = self.load()
        if self.backend == "siglip-image":
            return prepare_siglip_images(loaded, images)
        return dict(loaded.processor(images=images, return_tensors="pt"))

    def embed_prepared(self, inputs: dict[str, Any]) -> np.ndarray:
        """float32 (images, dim), each row of unit length."""
        import torch

        loaded = self.load()
        if self.backend == "siglip-image":
            return siglip_image_embeddings(loaded, inputs).cpu().numpy()
        with torch.inference_mode():
            output = loaded.model(**to_device(inputs, loaded.device, loaded.dtype))
            cls = output.pooler_output if getattr(output, "pooler_output", None) is not None else output[0][:, 0]
            return torch.nn.functional.normalize(cls.float(), dim=-1).cpu().numpy()

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        return self.embed_prepared(self.prepare(images))
