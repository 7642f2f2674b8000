"""Where the project finds data: the repo's embedded demo set and the optional shared data folder."""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DATA_DIR = os.path.join(REPO_ROOT, "data", "demo_pretraining")


def shared_data_dir():
    """$BERT_SHARED_DATA, else ../shared/data next to the repo (may not exist on a user's machine)."""
    return os.environ.get("BERT_SHARED_DATA", os.path.join(os.path.dirname(REPO_ROOT), "shared", "data"))


def shared_data_path(*parts):
    return os.path.join(shared_data_dir(), *parts)
