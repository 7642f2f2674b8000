"""run_squad.py with shared_masks' dropout masks and QA-head init (project venv); arguments go to run_squad.py.

HEAD_ONLY=1 keeps the product's own dropout masks and swaps only the QA-head init (the issue-H bisection run,
docs/finetune_and_inference.md, "Found: the QA head's random init").
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "..")]

import oneflow as flow  # noqa: E402

import modeling  # noqa: E402
import run_squad  # noqa: E402
import shared_masks  # noqa: E402


def masked_dropout(self, x):
    if not self.training or self.p == 0:
        return x
    return x * flow.from_numpy(shared_masks.scaled_mask(x.shape, self.p))


def build_bert_with_shared_head(*args, **kwargs):
    config, model, report = build_bert(*args, **kwargs)
    weight, bias = shared_masks.qa_init(config.hidden_size)
    model.qa_outputs.weight.data.copy_(flow.from_numpy(weight))
    model.qa_outputs.bias.data.copy_(flow.from_numpy(bias))
    return config, model, report


build_bert = run_squad.build_bert
if os.environ.get("HEAD_ONLY") != "1":
    modeling.Dropout.forward = masked_dropout
run_squad.build_bert = build_bert_with_shared_head
run_squad.main(sys.argv[1:])
