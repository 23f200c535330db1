"""Text-image filter: how well each frame matches each text prompt (SigLIP-family sigmoid scores)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from resources.models.base import ModelResource, cached, to_device

if TYPE_CHECKING:
    from PIL import Image

# SigLIP models were trained on text padded to 64 tokens; scores are only calibrated with the same padding.
TEXT_LENGTH = 64


@dataclass
class LoadedSiglip:
    model: Any
    processor: Any
    device: str
    dtype: Any


def pooled(output: Any):
    """The pooled embedding of a ``get_*_features`` call (a tensor, or an output object holding it)."""
    return output if not hasattr(output, "pooler_output") else output.pooler_output


def load_siglip(resource: ModelResource, model_id: str) -> LoadedSiglip:
    """SigLIP or fixed-resolution SigLIP2 (both ``SiglipModel``), or NaFlex SigLIP2 (``Siglip2Model``); once per
    process."""

    def build() -> LoadedSiglip:
        from transformers import AutoModel, AutoProcessor

        processor = resource._load(AutoProcessor.from_pretrained, model_id)
        model = resource._place(resource._load(AutoModel.from_pretrained, model_id))
        return LoadedSiglip(model, processor, resource.resolved_device(), resource.dtype())

    return cached(resource.cache_key("siglip", model_id), build)


def prepare_siglip_images(loaded: LoadedSiglip, images: list[Image.Image]) -> dict[str, Any]:
    """Resize and normalise on the CPU (safe to run in a worker thread while the model runs)."""
    return dict(loaded.processor(images=images, return_tensors="pt"))


def siglip_image_embeddings(loaded: LoadedSiglip, inputs: dict[str, Any]):
    """L2-normalised image embeddings (a tensor on the model's device)."""
    import torch

    with torch.inference_mode():
        embeds = pooled(loaded.model.get_image_features(**to_device(inputs, loaded.device, loaded.dtype)))
    return torch.nn.functional.normalize(embeds.float(), dim=-1)


class TextImageFilter(ModelResource):
    """Scores frames against text prompts with a SigLIP-family model (sigmoid probability per frame and prompt).

    Backends: ``siglip2-so400m`` (default), ``siglip2-giant``, ``siglip``; ``model_id`` may name any SigLIP or
    SigLIP2 checkpoint or a local directory holding one.
    """

    backend: Literal["siglip2-so400m", "siglip2-giant", "siglip"] = "siglip2-so400m"

    role: ClassVar[str] = "text-image filter"
    setting: ClassVar[str] = "MINING_FILTER_MODEL"
    default_models: ClassVar[dict[str, str]] = {
        "siglip2-so400m": "google/siglip2-so400m-patch14-384",
        "siglip2-giant": "google/siglip2-giant-opt-patch16-384",
        "siglip": "google/siglip-so400m-patch14-384",
    }

    def load(self) -> LoadedSiglip:
        return load_siglip(self, self.resolved_model_id())

    def prepare(self, images: list[Image.Image]) -> dict[str, Any]:
        return prepare_siglip_images(self.load(), images)

    def encode_prompts(self, prompts: list[str]):
        """L2-normalised text embeddings of the prompts, shape (prompts, dim)."""
        import torch

        if not prompts:
            raise ValueError("no prompts to score against")
        loaded = self.load()
        text = loaded.processor(text=prompts, padding="max_length", max_length=TEXT_LENGTH, return_tensors="pt")
        text = {k: v for k, v in dict(text).items() if k in ("input_ids", "attention_mask", "position_ids")}
        with torch.inference_mode():
            embeds = pooled(loaded.model.get_text_features(**to_device(text, loaded.device, loaded.dtype)))
        return torch.nn.functional.normalize(embeds.float(), dim=-1)

    def image_features(self, inputs: dict[str, Any]) -> np.ndarray:
        """L2-normalised image embeddings of prepared images, float32 (images, dim): kept, so that a new prompt
        is scored without running the image tower again."""
        return siglip_image_embeddings(self.load(), inputs).cpu().numpy().astype(np.float32)

    def score_features(self, features: np.ndarray, prompt_embeddings) -> np.ndarray:
        """Sigmoid scores, shape (images, prompts), from ``image_features`` and ``encode_prompts`` output."""
        import torch

        model = self.load().model
        with torch.inference_mode():
            images = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(prompt_embeddings.device)
            logits = images @ prompt_embeddings.T * model.logit_scale.float().exp() + model.logit_bias.float()
            return torch.sigmoid(logits).cpu().numpy().astype(np.float32)

    def score_prepared(self, inputs: dict[str, Any], prompt_embeddings) -> np.ndarray:
        """Sigmoid scores, shape (images, prompts), from prepared images and ``encode_prompts`` output."""
        return self.score_features(self.image_features(inputs), prompt_embeddings)

    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """Scores of images against prompts in one call (the asset overlaps ``prepare`` with the model instead)."""
        return self.score_prepared(self.prepare(images), self.encode_prompts(prompts))
