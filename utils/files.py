"""Files that appear only when complete: written under a temp name, renamed at the end, removed on failure."""
import contextlib
import json
import os


@contextlib.contextmanager
def atomic_output(path, opener=open, mode="w"):
    """A text file object for `path` that exists there only after the block completes (os.replace is atomic)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with opener(tmp, mode, encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # the open itself may have failed
            os.remove(tmp)
        raise


def write_json_atomic(path, obj, **dump_options):
    """json.dump(obj, **dump_options) as a complete text file: it ends in a newline."""
    with atomic_output(path) as f:
        json.dump(obj, f, **dump_options)
        f.write("\n")
