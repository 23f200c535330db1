"""Pools for what is scarce: the model stages. Their limits stand in the dagster.yaml files (embedded: one step of
each pool at a time; production: the number of GPUs). The warehouse has no pool: its writes are short transactions."""

VISION_MODELS = "vision_models"  # transformers: the text-image filter, the embedder, the detector
POSE_MODELS = "pose_models"  # MediaPipe: pose and hand landmarkers
