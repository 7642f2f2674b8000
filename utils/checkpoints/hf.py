"""Hugging Face BERT directories: `config.json` + `model.safetensors` (+ `vocab.txt`).

Import accepts BertModel, BertForPreTraining, BertForMaskedLM and BertForQuestionAnswering
weights, with or without the `bert.` prefix. Export writes HF's names and shapes for the
model class it is given, so `transformers.AutoModel.from_pretrained(out_dir)` can read it.
HF Linear weights are [out, in], the same layout as ours, so no tensor is transposed.
"""
import json
import os
import shutil

import numpy as np
import oneflow as flow
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from modeling import BertConfig
from utils.checkpoints import (
    MLM_BIAS,
    TIED_ALIASES,
    WORD_EMBEDDINGS,
    CheckpointError,
    state_dict_to_numpy,
    to_canonical,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.txt"
EXPORTABLE = ("BertModel", "BertForPreTraining", "BertForQuestionAnswering")


def is_hf_dir(path):
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(os.path.join(path, WEIGHTS_FILE))


def read_hf_config(model_dir):
    """config.json -> BertConfig (hidden_size, layers, heads, intermediate_size, hidden_act, layer_norm_eps, ...)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read HF config: {e}") from e
    if raw.get("model_type", "bert") != "bert":
        raise CheckpointError(f"{path}: model_type is {raw['model_type']!r}, expected 'bert'")
    try:
        return BertConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from e


def read_hf(model_dir):
    """An HF directory -> (BertConfig, canonical {name: numpy array})."""
    config = read_hf_config(model_dir)
    path = os.path.join(model_dir, WEIGHTS_FILE)
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors: {e}") from e
    return config, to_canonical(tensors, path)


def hf_names(state, architecture):
    """Canonical {name: array} -> {HF name: array} as HF's `architecture` class saves it."""
    if architecture == "BertModel":
        return {name[len("bert."):]: array for name, array in state.items() if name.startswith("bert.")}
    hf = dict(state)
    if architecture == "BertForPreTraining":
        hf.update({alias: state[target] for alias, target in TIED_ALIASES.items()})
    return hf


def hf_config_dict(config, architecture):
    """BertConfig -> an HF-style config.json dict."""
    return {
        **config.to_dict(),
        "architectures": [architecture],
        "model_type": "bert",
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }


def write_hf(state, config, out_dir, architecture, vocab_file=None):
    """Writes canonical float32 weights as an HF directory for `architecture`."""
    if architecture not in EXPORTABLE:
        raise ValueError(f"cannot export {architecture}; expected one of {EXPORTABLE}")
    if architecture == "BertForPreTraining" and not {WORD_EMBEDDINGS, MLM_BIAS} <= set(state):
        raise CheckpointError(f"{out_dir}: a BertForPreTraining export needs {WORD_EMBEDDINGS} and {MLM_BIAS}")
    os.makedirs(out_dir, exist_ok=True)
    tensors = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in hf_names(state, architecture).items()}
    # transformers refuses safetensors files whose metadata lacks format=pt. Serializing to bytes
    # and writing them ourselves keeps the usual file permissions (save_file makes them 0600).
    with open(os.path.join(out_dir, WEIGHTS_FILE), "wb") as f:
        f.write(save(tensors, metadata={"format": "pt"}))
    with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
        json.dump(hf_config_dict(config, architecture), f, indent=2, sort_keys=True)
    if vocab_file:
        shutil.copyfile(vocab_file, os.path.join(out_dir, VOCAB_FILE))


def export_hf(model, config, out_dir, vocab_file=None):
    """Exports a BertModel / BertForPreTraining / BertForQuestionAnswering as an HF directory.

    Works for local and global models; with global ones call it on every rank (gathering the
    weights is collective) and only rank 0 writes. The MLM decoder is written from the word
    embeddings, as HF's tied `cls.predictions.decoder.weight`.
    """
    architecture = type(model).__name__
    if architecture not in EXPORTABLE:
        raise ValueError(f"cannot export a {architecture}; expected one of {EXPORTABLE}")
    state = to_canonical(state_dict_to_numpy(model.state_dict()), architecture)
    if flow.env.get_rank() == 0:
        write_hf(state, config, out_dir, architecture, vocab_file)
    return out_dir
