"""Random-weight model directories load offline through the production from_pretrained path and run."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from resources.models.random_weights import _BUILDERS, ARCHITECTURES, MODEL_CLASSES, build_random_model

IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))  # 64 x 48 RGB
TEXT = "a red door"

# Parameters of the public checkpoints the "base" size mirrors (millions).
BASE_PARAMETERS = {
    "siglip": 203.2,  # google/siglip-base-patch16-224
    "siglip2": 375.2,  # google/siglip2-base-patch16-naflex
    "dinov2": 86.6,  # facebook/dinov2-base
    "dinov3": 85.7,  # facebook/dinov3-vitb16-pretrain-lvd1689m
    "grounding-dino": 232.3,  # IDEA-Research/grounding-dino-base
    "owlv2": 155.0,  # google/owlv2-base-patch16
    "florence-2": 231.4,  # Florence-2-base
}


def load(architecture: str, directory):
    auto = transformers.AutoImageProcessor if architecture.startswith("dino") else transformers.AutoProcessor
    processor = auto.from_pretrained(directory, local_files_only=True)
    model = getattr(transformers, MODEL_CLASSES[architecture]).from_pretrained(directory, local_files_only=True)
    return processor, model.eval()


def finite(*tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def run_siglip(processor, model) -> None:
    inputs = processor(text=[TEXT], images=[IMAGE], padding="max_length", max_length=64, return_tensors="pt")
    assert inputs["input_ids"].shape == (1, 64)
    out = model(**inputs)
    assert out.logits_per_image.shape == (1, 1)
    assert out.image_embeds.shape[0] == out.text_embeds.shape[0] == 1
    assert finite(out.logits_per_image, out.image_embeds, out.text_embeds)


def run_dino(processor, model) -> None:
    out = model(**processor(images=[IMAGE], return_tensors="pt"))
    assert out.pooler_output.shape == (1, model.config.hidden_size)
    assert out.last_hidden_state.shape[0] == 1 and finite(out.last_hidden_state, out.pooler_output)


def run_grounding_dino(processor, model) -> None:
    inputs = processor(images=[IMAGE], text=[f"{TEXT}."], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids[0] == 101 and ids[-1] == 102 and 1012 in ids  # [CLS] ... . [SEP] at BERT's ids
    out = model(**inputs)
    queries = model.config.num_queries
    assert out.logits.shape[:2] == (1, queries) and out.pred_boxes.shape == (1, queries, 4)
    assert finite(out.logits[..., : len(ids)], out.pred_boxes)  # logits past the text are -inf by design
    results = processor.post_process_grounded_object_detection(
        out, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[(48, 64)]
    )
    assert len(results) == 1 and results[0]["boxes"].shape[-1] == 4


def run_owlv2(processor, model) -> None:
    out = model(**processor(text=[[TEXT]], images=[IMAGE], return_tensors="pt"))
    assert out.logits.shape[0] == 1 and out.logits.shape[-1] == 1 and out.pred_boxes.shape[-1] == 4
    assert finite(out.logits, out.pred_boxes)
    results = processor.post_process_grounded_object_detection(out, threshold=0.0, target_sizes=[(64, 64)])
    assert len(results) == 1 and results[0]["boxes"].shape[-1] == 4


def run_florence(processor, model) -> None:
    for task, prompt in [("<OD>", "<OD>"), ("<CAPTION_TO_PHRASE_GROUNDING>", f"<CAPTION_TO_PHRASE_GROUNDING>{TEXT}")]:
        inputs = processor(text=[prompt], images=[IMAGE], return_tensors="pt")
        generated = model.generate(
            input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], max_new_tokens=4, num_beams=1
        )
        assert generated.shape[0] == 1 and 1 < generated.shape[1] <= 5
        text = processor.batch_decode(generated, skip_special_tokens=False)[0]
        assert set(processor.post_process_generation(text, task=task, image_size=IMAGE.size)) == {task}


RUN = {
    "siglip": run_siglip,
    "siglip2": run_siglip,
    "dinov2": run_dino,
    "dinov3": run_dino,
    "grounding-dino": run_grounding_dino,
    "owlv2": run_owlv2,
    "florence-2": run_florence,
}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_tiny_model_loads_offline_and_runs(tmp_path, architecture):
    directory = build_random_model(architecture, tmp_path / architecture)
    assert directory == tmp_path / architecture
    assert (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()
    processor, model = load(architecture, directory)
    assert type(model).__name__ == MODEL_CLASSES[architecture]
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    with torch.inference_mode():
        RUN[architecture](processor, model)


def test_florence_processor_parses_locations(tmp_path):
    processor, _ = load("florence-2", build_random_model("florence-2", tmp_path / "florence"))
    tokenizer = processor.tokenizer
    ids = tokenizer("<s>red door<loc_0><loc_0><loc_500><loc_999></s>", add_special_tokens=False)["input_ids"]
    text = processor.batch_decode([ids], skip_special_tokens=False)[0]
    parsed = processor.post_process_generation(text, task="<CAPTION_TO_PHRASE_GROUNDING>", image_size=(64, 48))
    assert parsed["<CAPTION_TO_PHRASE_GROUNDING>"]["labels"] == ["red door"]
    np.testing.assert_allclose(parsed["<CAPTION_TO_PHRASE_GROUNDING>"]["bboxes"], [[0, 0, 32, 48]], atol=1)


def test_text_longer_than_the_context_is_truncated(tmp_path):
    """Character-level tokenizers make long text; processors cut it to the positions the model has."""
    long_text = "a door handle with glass windows " * 4
    for architecture in ("siglip", "siglip2"):
        processor, _ = load(architecture, build_random_model(architecture, tmp_path / architecture))
        inputs = processor(text=[long_text], padding="max_length", max_length=64, return_tensors="pt")
        assert inputs["input_ids"].shape == (1, 64)
    processor, _ = load("owlv2", build_random_model("owlv2", tmp_path / "owlv2"))
    assert processor(text=[[long_text, "door"]], return_tensors="pt")["input_ids"].shape == (2, 16)


def test_seed_decides_the_weights(tmp_path):
    first = load("dinov2", build_random_model("dinov2", tmp_path / "a", seed=1))[1].state_dict()
    again = load("dinov2", build_random_model("dinov2", tmp_path / "b", seed=1))[1].state_dict()
    other = load("dinov2", build_random_model("dinov2", tmp_path / "c", seed=2))[1].state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_base_size_has_the_real_checkpoint_dimensions(architecture):
    """Config level (the model is built on the meta device, no weights): parameters within 1% of the real ones."""
    config, _ = _BUILDERS[architecture](tiny=False)
    with torch.device("meta"):
        model = getattr(transformers, MODEL_CLASSES[architecture])(config)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(BASE_PARAMETERS[architecture], rel=0.01)
    if architecture == "dinov2":
        assert config.hidden_size == 768 and config.num_hidden_layers == 12 and config.patch_size == 14


def test_bad_arguments_and_cheap_import(tmp_path):
    assert set(MODEL_CLASSES) == set(ARCHITECTURES)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_random_model("clip", tmp_path)
    with pytest.raises(ValueError, match="unknown size"):
        build_random_model("dinov2", tmp_path, size="large")
    code = "import sys, resources.models.random_weights; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
