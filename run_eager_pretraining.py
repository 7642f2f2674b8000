"""BERT pre-training in eager mode: one process, or --use_ddp / --use_consistent under oneflow.distributed.launch."""
from utils import numpy_blas  # noqa: F401  (first: it loads numpy with its fast BLAS kernel, see the module)
from utils.trainer import pretrain

if __name__ == "__main__":
    pretrain("eager")
