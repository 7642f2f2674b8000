"""Checkpoint interop for the BERT models in modeling.py.

Modules:
- loading:   detect_format, read_checkpoint, resolve_config, load_pretrained (any format -> a model)
- hf:        Hugging Face directories (config.json + model.safetensors), import and export_hf
- lazy:      OneFlow lazy-mode snapshots (one folder per variable + snapshot_done), read and write
- export_hf: CLI, `python -m utils.checkpoints.export_hf --model_load_dir X --output_dir Y`

Every reader returns weights in one "canonical" naming: the BertForPreTraining names of
modeling.py (`bert.embeddings.*`, `bert.encoder.*`, `bert.pooler.*`, `cls.predictions.*`,
`cls.seq_relationship.*`) plus `qa_outputs.*`, as float numpy arrays in our layouts.
"""


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit the model; the message names the path."""
