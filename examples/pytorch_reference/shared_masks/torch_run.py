"""squad_reference.py with shared_masks' dropout masks and QA-head init (PyTorch venv); arguments go to it.

HF's [PAD] row is trained here as ours is (F.embedding without padding_idx), so the two runs differ only in
framework arithmetic.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import BertForQuestionAnswering  # noqa: E402

import shared_masks  # noqa: E402


def masked_dropout(x, p=0.5, training=True, inplace=False):
    if not training or p == 0:
        return x
    return x * torch.from_numpy(shared_masks.scaled_mask(x.shape, p))


def embedding_without_padding_idx(input, weight, padding_idx=None, *args, **kwargs):
    return embedding(input, weight, None, *args, **kwargs)


def from_pretrained_with_shared_head(cls, *args, **kwargs):
    model = from_pretrained(cls, *args, **kwargs)
    weight, bias = shared_masks.qa_init(model.config.hidden_size)
    with torch.no_grad():
        model.qa_outputs.weight.copy_(torch.from_numpy(weight))
        model.qa_outputs.bias.copy_(torch.from_numpy(bias))
    return model


embedding = F.embedding
from_pretrained = BertForQuestionAnswering.from_pretrained.__func__
F.dropout = masked_dropout
F.embedding = embedding_without_padding_idx
BertForQuestionAnswering.from_pretrained = classmethod(from_pretrained_with_shared_head)

import squad_reference  # noqa: E402

sys.argv = ["squad_reference.py"] + sys.argv[1:]
squad_reference.main()
