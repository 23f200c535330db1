"""Model resources with tiny random models, loaded through the same from_pretrained path as real checkpoints."""

import numpy as np
import pytest
from vision_support import scene

from resources.models.base import ModelUnavailableError, pick_device
from resources.models.detector import Detections, OpenVocabDetector, match_label
from resources.models.embedder import ImageEmbedder
from resources.models.text_filter import TextImageFilter

IMAGES = [scene(1), scene(2).convert("L").convert("RGB"), scene(3, size=(40, 120))]


@pytest.mark.parametrize("architecture", ["siglip", "siglip2"])
def test_text_filter_scores_every_image_and_prompt(tiny_models, architecture):
    text_filter = TextImageFilter(backend="siglip", model_id=tiny_models[architecture], offline=True)
    scores = text_filter.score(IMAGES, ["a photo of a door.", "a cat"])
    assert scores.shape == (3, 2) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    again = text_filter.score(IMAGES[:1], ["a photo of a door.", "a cat"])
    np.testing.assert_allclose(again[0], scores[0], atol=1e-5)  # a frame's score does not depend on its batch
    with pytest.raises(ValueError, match="no prompts"):
        text_filter.score(IMAGES, [])


@pytest.mark.parametrize(
    ("backend", "architecture"), [("dinov2-base", "dinov2"), ("dinov3", "dinov3"), ("siglip-image", "siglip")]
)
def test_embedder_gives_unit_vectors(tiny_models, backend, architecture):
    embedder = ImageEmbedder(backend=backend, model_id=tiny_models[architecture], offline=True)
    vectors = embedder.embed(IMAGES)
    assert vectors.shape[0] == 3 and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(IMAGES[:1])[0], vectors[0], atol=1e-5)


def test_siglip_image_embedder_shares_the_filter_weights(tiny_models):
    text_filter = TextImageFilter(backend="siglip", model_id=tiny_models["siglip"], offline=True)
    embedder = ImageEmbedder(backend="siglip-image", model_id=tiny_models["siglip"], offline=True)
    assert embedder.load() is text_filter.load()
    assert embedder.load().model is TextImageFilter(model_id=tiny_models["siglip"], offline=True).load().model


@pytest.mark.parametrize(("backend", "architecture"), [("grounding-dino", "grounding-dino"), ("owlv2", "owlv2")])
def test_detector_boxes_lie_inside_each_image(tiny_models, backend, architecture):
    detector = OpenVocabDetector(backend=backend, model_id=tiny_models[architecture], offline=True)
    found = detector.detect(IMAGES, ["door", "door handle"], threshold=0.0)
    assert len(found) == 3
    assert sum(len(d) for d in found) > 0
    for image, boxes in zip(IMAGES, found, strict=True):
        width, height = image.size
        assert boxes.boxes.shape == (len(boxes), 4)
        assert np.all(boxes.boxes[:, 0] >= 0) and np.all(boxes.boxes[:, 2] <= width)
        assert np.all(boxes.boxes[:, 1] >= 0) and np.all(boxes.boxes[:, 3] <= height)
        assert set(boxes.labels) <= {"door", "door handle"}
    nothing = detector.detect(IMAGES[:1], ["door"], threshold=1.0)
    assert len(nothing[0]) == 0


def test_florence2_grounds_the_labels_through_generate(tiny_models, monkeypatch):
    detector = OpenVocabDetector(backend="florence-2", model_id=tiny_models["florence-2"], offline=True)
    found = detector.detect(IMAGES[:2], ["door", "door handle"], threshold=0.3)
    assert len(found) == 2 and all(isinstance(d, Detections) for d in found)  # random weights: usually no box
    # what the model answers is parsed by the checkpoint's own post-processor: boxes scaled to each image
    processor = detector.load().processor
    monkeypatch.setattr(
        processor, "batch_decode", lambda *a, **k: ["<s>door<loc_100><loc_200><loc_500><loc_900></s>"] * 2
    )
    found = detector.detect(IMAGES[:2], ["door", "door handle"], threshold=0.3)
    width, height = IMAGES[0].size
    assert found[0].labels == ["door"] and found[0].scores.tolist() == [1.0]
    np.testing.assert_allclose(found[0].boxes[0], [0.1 * width, 0.2 * height, 0.5 * width, 0.9 * height], atol=1)


def test_weights_load_once_per_process(tiny_models):
    first = TextImageFilter(model_id=tiny_models["siglip"], offline=True)
    second = TextImageFilter(model_id=tiny_models["siglip"], offline=True, batch_size=99)
    assert first.load() is second.load()


def test_missing_weights_name_the_model_and_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    text_filter = TextImageFilter(offline=True)
    with pytest.raises(ModelUnavailableError) as error:
        text_filter.load()
    message = str(error.value)
    assert "google/siglip2-so400m-patch14-384" in message and "hf download" in message and "offline" in message
    assert "MINING_FILTER_MODEL" in message  # the setting that points at a local copy
    with pytest.raises(ModelUnavailableError, match="no model directory"):
        ImageEmbedder(model_id=str(tmp_path / "nothing-here")).load()
    with pytest.raises(ModelUnavailableError, match="holds no loadable model"):
        OpenVocabDetector(model_id=str(tmp_path)).load()


def test_hf_hub_offline_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert OpenVocabDetector(backend="owlv2").is_offline()
    with pytest.raises(ModelUnavailableError, match="google/owlv2-base-patch16-ensemble"):
        OpenVocabDetector(backend="owlv2").load()


def test_moondream_reports_what_it_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailableError, match="vikhyatk/moondream2"):
        OpenVocabDetector(backend="moondream", offline=True).load()


def test_device_auto_falls_back_to_cpu_and_half_precision_only_on_cuda():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert pick_device("auto") == expected
    assert pick_device("cpu") == "cpu"
    assert TextImageFilter(device="cpu").dtype() == torch.float32
    assert TextImageFilter(device="cuda", half_precision=True).dtype() == torch.float16
    assert TextImageFilter(device="cuda", half_precision=False).dtype() == torch.float32


def test_unknown_backend_is_refused():
    with pytest.raises(Exception, match="backend"):
        TextImageFilter(backend="clip")


def test_match_label_and_clipping():
    assert match_label("glass door", ["glass door", "handle"]) == "glass door"
    assert match_label("door", ["glass door", "handle"]) == "glass door"
    assert match_label("handle glass", ["glass door", "handle"]) == "glass door"  # first best overlap
    assert match_label("", ["a"]) == "a"  # one label: every box is of it
    assert match_label(". [SEP]", ["glass door", "handle"]) is None
    found = Detections.from_tensors(
        np.array([[-5, -5, 50, 50], [10, 10, 10, 20], [0, 0, 200, 30]], np.float32),
        np.array([0.9, 0.8, np.nan], np.float32),
        ["a", "b", "c", None][:3],
        width=40,
        height=30,
    )
    assert found.labels == ["a"]  # the empty box and the NaN score are dropped
    np.testing.assert_array_equal(found.boxes, [[0, 0, 40, 30]])


def test_a_run_can_choose_another_backend_in_its_config():
    """What the Launchpad's `resources:` section does: the definitions' resource is the default, run config wins."""
    import dagster as dg

    @dg.asset
    def chosen(detector: OpenVocabDetector) -> str:
        return detector.describe()

    resources = {"detector": OpenVocabDetector(batch_size=2)}
    default = dg.materialize([chosen], resources=resources)
    override = dg.materialize(
        [chosen], resources=resources, run_config={"resources": {"detector": {"config": {"backend": "owlv2"}}}}
    )
    assert default.output_for_node("chosen") == "grounding-dino:IDEA-Research/grounding-dino-base"
    assert override.output_for_node("chosen") == "owlv2:google/owlv2-base-patch16-ensemble"
