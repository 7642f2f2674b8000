"""BERT pre-training in eager mode: one process, or --use_ddp / --use_consistent under oneflow.distributed.launch."""
from utils.trainer import pretrain

if __name__ == "__main__":
    pretrain("eager")
