"""Small synthetic pre-training records for fast end-to-end tests (tiny vocab, learnable structure)."""
import numpy as np

import dataset

MASK_ID = 3


def synthetic_records(num_records, seq_length=32, max_predictions=5, vocab_size=64, seed=0):
    """Records in the seed's pretraining schema with exactly `max_predictions` masked tokens each.

    Tokens follow a skewed (Zipf-like) distribution and NSP labels depend on the first token, so a model
    can lower both losses. A constant mask count keeps the MLM normalisation identical however a batch
    is split into micro-batches or ranks, which the mode-equivalence tests rely on.
    """
    rng = np.random.RandomState(seed)
    probs = 1.0 / np.arange(1, vocab_size - 4 + 1)
    probs /= probs.sum()
    for _ in range(num_records):
        length = rng.randint(seq_length // 2, seq_length + 1)
        tokens = np.zeros(seq_length, dtype=np.int32)
        tokens[:length] = 5 + rng.choice(vocab_size - 5, size=length, p=probs[: vocab_size - 5] / probs[: vocab_size - 5].sum())
        tokens[0], tokens[length - 1] = 2, 4  # [CLS] ... [SEP]-like ids
        positions = np.sort(rng.choice(np.arange(1, length - 1), size=max_predictions, replace=False)).astype(np.int32)
        ids = tokens[positions].copy()
        tokens[positions] = MASK_ID
        segment = np.zeros(seq_length, dtype=np.int32)
        segment[length // 2:length] = 1
        mask = (np.arange(seq_length) < length).astype(np.int32)
        yield {
            "input_ids": tokens,
            "input_mask": mask,
            "segment_ids": segment,
            "masked_lm_positions": positions,
            "masked_lm_ids": ids,
            "masked_lm_weights": np.ones(max_predictions, dtype=np.float32),
            "next_sentence_labels": np.array([int(tokens[1] % 2)], dtype=np.int32),
        }


def write_synthetic_dataset(directory, num_records=256, num_parts=2, val_records=64, **kwargs):
    """Training parts in `directory`, validation parts in `directory`/val; returns the directory."""
    seed = kwargs.pop("seed", 0)
    dataset.write_parts(directory, synthetic_records(num_records, seed=seed, **kwargs), num_parts)
    if val_records:
        dataset.write_parts(f"{directory}/val", synthetic_records(val_records, seed=seed + 1, **kwargs), 1)
    return directory
