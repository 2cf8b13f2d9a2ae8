"""Tags of a SavedModel's MetaGraphDefs (TensorFlow's ``saved_model.tag_constants``)."""

SERVING = "serve"
TRAINING = "train"
EVAL = "eval"
GPU = "gpu"
TPU = "tpu"
