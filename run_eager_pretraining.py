"""BERT pre-training in eager mode: one process, or --use_ddp / --use_consistent under oneflow.distributed.launch."""
import utils  # noqa: F401  (first: it prepares numpy and OneFlow, see utils/__init__.py)
from utils.trainer import pretrain

if __name__ == "__main__":
    pretrain("eager")
