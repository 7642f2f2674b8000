"""BERT pre-training in graph mode (nn.Graph); --use_consistent for global data parallel under oneflow.distributed.launch."""
import utils  # noqa: F401  (first: it prepares numpy and OneFlow, see utils/__init__.py)
from utils.trainer import pretrain

if __name__ == "__main__":
    pretrain("graph")
