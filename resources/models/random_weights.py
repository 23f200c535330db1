"""Randomly initialised model directories that load offline exactly like the public checkpoints they stand in for.

``build_random_model(architecture, directory, size)`` writes ``config.json``, ``model.safetensors`` and the processor
files (tokenizer and image processor) into ``directory``; ``AutoProcessor.from_pretrained(directory)`` (for the DINO
ones ``AutoImageProcessor``) and ``transformers.<MODEL_CLASSES[architecture]>.from_pretrained(directory)`` load them.

``tiny`` is for tests (hidden sizes ~32, 1-2 layers, 32-64 px images, built in a fraction of a second). ``base`` has
the real dimensions of the default checkpoint's family (random weights: for measuring speed and memory, never
quality). Tokenizers are character level (Grounding DINO: a small WordPiece vocabulary at BERT's ids); in ``base`` their
vocabularies are padded with filler tokens to the real vocabulary size, so the embedding tables and LM heads have
their real shapes. Only PIL/numpy image processors are used (no torchvision needed).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

ARCHITECTURES = ("siglip", "siglip2", "dinov2", "dinov3", "grounding-dino", "owlv2", "florence-2")

MODEL_CLASSES = {
    "siglip": "SiglipModel",
    "siglip2": "Siglip2Model",
    "dinov2": "Dinov2Model",
    "dinov3": "DINOv3ViTModel",
    "grounding-dino": "GroundingDinoForObjectDetection",
    "owlv2": "Owlv2ForObjectDetection",
    "florence-2": "Florence2ForConditionalGeneration",
}

BASE_VIT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
TINY_LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CHARS = string.ascii_lowercase + string.digits + string.punctuation
WORDS = ("a", "an", "the", "of", "photo", "red", "door", "handle", "cat", "dog", "person", "car", "window", "glass")
FLORENCE_TOKENS = (
    ["<od>", "</od>", "<ocr>", "</ocr>"]
    + [f"<loc_{i}>" for i in range(1000)]
    + ["<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>", "<seg>", "</seg>"]
    + ["<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>", "</region_to_desciption>"]
    + ["<proposal>", "</proposal>", "<poly>", "</poly>", "<and>"]
)
# Phrases Florence-2's phrase grounding drops (as in the converted checkpoints' processor_config.json).
FLORENCE_BANNED_PHRASES = (
    "it,I,me,mine,you,your,yours,he,him,his,she,her,hers,they,them,their,theirs,one,oneself,we,us,our,ours,its,"
    "myself,yourself,himself,herself,itself,ourselves,yourselves,themselves,this,that,these,those,who,whom,whose,"
    "which,what,all,another,any,anybody,anyone,anything,each,everybody,everyone,everything,few,many,nobody,none,"
    "several,some,somebody,someone,something,each other,one another,the image,image,images,the,a,an,a group,"
    "other objects,lots,a set"
)


def build_random_model(
    architecture: str, directory: str | Path, size: Literal["tiny", "base"] = "tiny", seed: int = 0
) -> Path:
    """Write a randomly initialised ``architecture`` model (weights, config, processor) into ``directory``."""
    if architecture not in MODEL_CLASSES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
    if size not in ("tiny", "base"):
        raise ValueError(f"unknown size {size!r}; expected 'tiny' or 'base'")
    import torch
    import transformers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config, processor = _BUILDERS[architecture](size == "tiny")
    config.architectures = [MODEL_CLASSES[architecture]]
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model = getattr(transformers, MODEL_CLASSES[architecture])(config).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _fill(vocab: list[str], total: int | None, tail: tuple[str, ...] = ()) -> dict[str, int]:
    """``vocab`` padded with filler tokens so that, with ``tail`` (the last ids), it has ``total`` entries."""
    fillers = [f"<extra_{i}>" for i in range(max(0, (total or 0) - len(vocab) - len(tail)))]
    return {token: i for i, token in enumerate([*vocab, *fillers, *tail])}


def _byte_alphabet() -> list[str]:
    """The 256 characters byte-level BPE (GPT-2, CLIP, BART) writes bytes as, '!' first."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]


def _truncating(length: int) -> dict[str, Any]:
    """Tokenizer arguments: at most ``length`` tokens. Processors pass ``truncation`` on from the tokenizer's init
    arguments, so character-level text longer than the real checkpoint's word pieces still fits the positions."""
    return {"model_max_length": length, "truncation": True}


def _dims(tiny: bool, base: dict[str, Any], **small: Any) -> dict[str, Any]:
    """A transformer's sizes: ``base`` as given, or tiny (hidden 32, one layer, two heads) updated with ``small``."""
    return {**TINY_LAYERS, **small} if tiny else base


def _siglip(tiny: bool) -> tuple[Any, Any]:
    """google/siglip-base-patch16-224 (SiglipModel; also the fixed-resolution SigLIP2 checkpoints)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipProcessor

    vocab = _fill(["<pad>", "</s>", "<unk>", "▁", *CHARS], None if tiny else 32000)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "▁")])
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="</s>", eos_token="</s>", unk_token="<unk>", **_truncating(64)
    )
    side = 32 if tiny else 224
    text = {"vocab_size": len(vocab), "max_position_embeddings": 64, "pad_token_id": 1, "eos_token_id": 1}
    text["bos_token_id"] = None
    config = SiglipConfig(
        text_config={**text, **_dims(tiny, BASE_VIT)},
        vision_config={**_dims(tiny, BASE_VIT), "image_size": side, "patch_size": 8 if tiny else 16},
    )
    image_processor = SiglipImageProcessor(size={"height": side, "width": side})
    return config, SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _siglip2(tiny: bool) -> tuple[Any, Any]:
    """google/siglip2-base-patch16-naflex (Siglip2Model, NaFlex: variable aspect ratio, up to 256 patches)."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Processor, Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    vocab = _fill([*specials, *byte_tokens, "▁", *CHARS], None if tiny else 256000)
    tokenizer = Siglip2Tokenizer(vocab=vocab, merges=[], model_max_length=64)
    # Siglip2Processor passes patch_size 16 and max_num_patches 256 to the image processor unless the caller does
    patch, patches = 16, 256
    text = {"vocab_size": len(vocab), "max_position_embeddings": 64, "pad_token_id": 0, "bos_token_id": 2}
    text["eos_token_id"] = 1
    config = Siglip2Config(
        text_config={**text, **_dims(tiny, BASE_VIT)},
        vision_config={**_dims(tiny, BASE_VIT), "patch_size": patch, "num_patches": patches},
    )
    image_processor = Siglip2ImageProcessor(patch_size=patch, max_num_patches=patches)
    return config, Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)


def _dinov2(tiny: bool) -> tuple[Any, Any]:
    """facebook/dinov2-base: resize the short side to 256, centre crop 224, patches of 14 (16 x 16 + CLS)."""
    from transformers import BitImageProcessor, Dinov2Config

    dims = _dims(tiny, {**BASE_VIT, "image_size": 518, "patch_size": 14}, image_size=32, patch_size=8)
    dims.pop("intermediate_size")  # Dinov2 sizes its MLP with mlp_ratio (4)
    crop = 32 if tiny else 224
    image_processor = BitImageProcessor(
        size={"shortest_edge": 40 if tiny else 256},
        crop_size={"height": crop, "width": crop},
        do_center_crop=True,
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    return Dinov2Config(layerscale_value=1.0, **dims), image_processor


def _dinov3(tiny: bool) -> tuple[Any, Any]:
    """facebook/dinov3-vitb16-pretrain-lvd1689m; saved with BitImageProcessor (DINOv3's own needs torchvision)."""
    from transformers import BitImageProcessor, DINOv3ViTConfig

    side = 32 if tiny else 224
    dims = _dims(tiny, {**BASE_VIT, "patch_size": 16}, patch_size=8)
    config = DINOv3ViTConfig(image_size=side, num_register_tokens=4, key_bias=False, rope_theta=100.0, **dims)
    image_processor = BitImageProcessor(
        size={"height": side, "width": side},
        do_center_crop=False,
        resample=2,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    return config, image_processor


def _bert_tokenizer(tiny: bool) -> Any:
    """Uncased WordPiece at BERT's ids for the tokens Grounding DINO hard-codes: [CLS] 101, [SEP] 102, '.' 1012,
    '?' 1029; every letter and digit also has a '##' form, so any word can be spelt."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"[unused{i}]" for i in range(100, 995)]  # up to id 998: punctuation starts at 999 as in BERT
    vocab += [c for c in map(chr, range(33, 127)) if not c.isupper()]  # '!' 999 ... '.' 1012 ... '?' 1029 ...
    vocab += [word for word in WORDS if word not in vocab]
    vocab += [f"##{c}" for c in string.ascii_lowercase + string.digits]
    return BertTokenizer(vocab=_fill(vocab, None if tiny else 30522), model_max_length=512)


def _grounding_dino(tiny: bool) -> tuple[Any, Any]:
    """IDEA-Research/grounding-dino-base: Swin-B backbone (384, window 12), BERT-base text, 900 queries."""
    from transformers import GroundingDinoConfig, GroundingDinoImageProcessor, GroundingDinoProcessor

    tokenizer = _bert_tokenizer(tiny)
    text = {"vocab_size": len(tokenizer)}
    if tiny:
        text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        backbone = {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4}
        heads = {"encoder_attention_heads": 2, "decoder_attention_heads": 2}
        sizes = {"d_model": 32, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_queries": 10, **heads}
        sizes.update(encoder_layers=1, decoder_layers=2)
        image_size = {"shortest_edge": 64, "longest_edge": 96}
    else:
        backbone = {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 12}
        backbone["image_size"] = 384
        sizes = {}
        image_size = {"shortest_edge": 800, "longest_edge": 1333}
    backbone.update(model_type="swin", out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, **sizes)
    image_processor = GroundingDinoImageProcessor(size=image_size)
    return config, GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _owlv2(tiny: bool) -> tuple[Any, Any]:
    """google/owlv2-base-patch16(-ensemble): images padded to a square and resized to 960, 16 text tokens."""
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ImageProcessor, Owlv2Processor

    alphabet = _byte_alphabet()  # '!' first: OWL pads with '!' (id 0)
    ends = ("<|startoftext|>", "<|endoftext|>")  # end of text has the highest id: OWL pools at the argmax id
    vocab = _fill([*alphabet, *(f"{c}</w>" for c in alphabet)], None if tiny else 49408, tail=ends)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], pad_token="!", **_truncating(16))
    text = {"vocab_size": len(vocab), "max_position_embeddings": 16, "pad_token_id": 0}
    text.update(bos_token_id=vocab[ends[0]], eos_token_id=vocab[ends[1]])
    base_text = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8}
    side = 32 if tiny else 960
    config = Owlv2Config(
        text_config={**text, **_dims(tiny, base_text)},
        vision_config={**_dims(tiny, BASE_VIT), "image_size": side, "patch_size": 8 if tiny else 16},
        projection_dim=32 if tiny else 512,
    )
    image_processor = Owlv2ImageProcessor(size={"height": side, "width": side})
    return config, Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)


def _florence2(tiny: bool) -> tuple[Any, Any]:
    """Florence-2-base (florence-community): DaViT vision tower (768 px, 577 image tokens) + BART-base."""
    from transformers import BartTokenizer, CLIPImageProcessor, Florence2Config, Florence2Processor

    vocab = _fill(["<s>", "<pad>", "</s>", "<unk>", *_byte_alphabet()], None if tiny else 50265, tail=("<mask>",))
    specials = {"extra_special_tokens": [*FLORENCE_TOKENS, "<image>"], "image_token": "<image>"}
    tokenizer = BartTokenizer(vocab=vocab, merges=[], model_max_length=1024, **specials)  # added ids: <image> first
    vocab_size = -(-len(tokenizer) // 64) * 64  # like the converted checkpoints: padded to a multiple of 64
    side = 64 if tiny else 768
    image_tokens = (side // 32) ** 2 + 1  # the vision tower downsamples 32 times; one more token: the image mean
    if tiny:
        dims = {"d_model": 32, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 1024}
        dims.update(encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2)
        vision = {"embed_dim": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": 2}
        vision.update(num_groups=[1, 2, 2, 4], projection_dim=32)
    else:
        dims = {"d_model": 768, "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072, "max_position_embeddings": 1024}
        dims.update(encoder_layers=6, decoder_layers=6, encoder_attention_heads=12, decoder_attention_heads=12)
        vision = {"embed_dim": [128, 256, 512, 1024], "depths": [1, 1, 9, 1], "num_heads": [4, 8, 16, 32]}
        vision.update(num_groups=[4, 8, 16, 32], window_size=12, projection_dim=768)
    ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}
    config = Florence2Config(
        text_config={"vocab_size": vocab_size, **ids, "forced_eos_token_id": 2, **dims},
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    image_processor = CLIPImageProcessor(
        size={"height": side, "width": side},
        crop_size={"height": side, "width": side},
        do_center_crop=False,
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        image_seq_length=image_tokens,
    )
    post_processor_config = {
        "ocr": {"pattern": r"(.+?)" + r"<loc_(\d+)>" * 8, "area_threshold": 0.0},
        "phrase_grounding": {"banned_grounding_tokens": FLORENCE_BANNED_PHRASES.split(",")},
        **{task: {} for task in ("pure_text", "description_with_bboxes", "description_with_polygons", "polygons")},
        **{task: {} for task in ("bboxes", "description_with_bboxes_or_polygons")},
    }
    return config, Florence2Processor(image_processor, tokenizer, post_processor_config=post_processor_config)


_BUILDERS = {
    "siglip": _siglip,
    "siglip2": _siglip2,
    "dinov2": _dinov2,
    "dinov3": _dinov3,
    "grounding-dino": _grounding_dino,
    "owlv2": _owlv2,
    "florence-2": _florence2,
}
