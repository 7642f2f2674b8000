"""BERT pre-training in graph mode (nn.Graph); --use_consistent for global data parallel under oneflow.distributed.launch."""
from utils import numpy_blas  # noqa: F401  (first: it loads numpy with its fast BLAS kernel, see the module)
from utils.trainer import pretrain

if __name__ == "__main__":
    pretrain("graph")
