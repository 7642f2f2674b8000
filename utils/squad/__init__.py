"""SQuAD's three stages, side by side: features.py (JSON -> windowed OFRecord features, Google's run_squad
algorithm), postprocess.py (logits -> answers) and evaluate.py (the official v1.1 / v2.0 scores)."""
