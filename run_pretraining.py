"""BERT pre-training in graph mode (nn.Graph); --use_consistent for global data parallel under oneflow.distributed.launch."""
from utils.trainer import pretrain

if __name__ == "__main__":
    pretrain("graph")
