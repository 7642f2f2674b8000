"""Export a BERT checkpoint to ONNX with OneFlow's own converter (oneflow-onnx), then check it against OneFlow.

  python -m utils.export_onnx --model_load_dir DIR --task {qa,features,fill_mask,nsp} --output model.onnx \
      [--seq_length N] [--opset 13]

The graph is what `run_infer.py --task T` computes (its nn.Graph, outputs included: NSP and fill-mask export
probabilities), traced once at batch 2 x --seq_length. The converter writes every shape as a constant; the
export then makes the batch, the sequence length and the number of [MASK] positions dynamic (see make_dynamic),
so one file serves any batch size and any length up to max_position_embeddings. Each LayerNorm is rewritten from the
training-time matmul-broadcast form to ReduceMean / Sub / Pow / ReduceMean / Add / Sqrt / Div, which ONNX Runtime
fuses into one LayerNormalization kernel (see plain_layer_norms). Inputs are int32 `input_ids`,
`input_mask`, `segment_ids` (and `masked_lm_positions` for fill_mask / nsp) as run_infer.py packs them.

The written model is checked before the command succeeds: ONNX Runtime against OneFlow eager on the task's
example text (tokenized with the checkpoint's vocab.txt, else random ids) at batch 1 and 4, at lengths other
than the traced one; a difference above --tolerance (1e-4) is an error. The checkpoint's vocab.txt is copied
beside the output, where `run_infer.py --onnx` looks for it. Needs the ONNX extra: bash scripts/setup_env.sh --onnx.
"""
import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import oneflow as flow

import run_infer
from utils import config as cfg
from utils import interrupts
from utils.data.tokenization import load_wordpiece_tokenizer
from utils.task_flags import default_vocab_file
from utils.errors import BertError
from utils.runtime import EvalGraph

TRACE_BATCH = 2
INT64_MAX = np.iinfo(np.int64).max
OUTPUT_NAMES = {
    "qa": ("start_logits", "end_logits"),
    "features": ("hidden_states",),
    "nsp": ("nsp_probabilities",),
    "fill_mask": ("mlm_probabilities",),
}
# Dynamic axes by tensor name; None keeps the traced size (hidden size, vocabulary, 2 NSP classes).
DYNAMIC_AXES = {
    "input_ids": ("batch", "sequence"),
    "input_mask": ("batch", "sequence"),
    "segment_ids": ("batch", "sequence"),
    "masked_lm_positions": ("batch", "masks"),
    "start_logits": ("batch", "sequence"),
    "end_logits": ("batch", "sequence"),
    "hidden_states": ("batch", "sequence", None),
    "nsp_probabilities": ("batch", None),
    "mlm_probabilities": ("batch", "masks", None),
}


class ExportError(BertError):
    """The converter failed, or the exported model disagrees with OneFlow."""


# ---------------------------------------------------------------- converter compatibility (oneflow-onnx 0.6.2)


def converter():
    """oneflow-onnx's Export, with the fixes this model needs applied once (all for oneflow-onnx 0.6.2)."""
    # 0.6.2 uses np.bool, which numpy 1.24 removed: importing the converter fails without the alias.
    if "bool" not in vars(np):
        np.bool = bool
    from oneflow_onnx import onnx_wrapper
    from oneflow_onnx.oneflow2onnx.flow2onnx import Export
    from oneflow_onnx.oneflow2onnx.handler import flow_op
    from oneflow_onnx.oneflow2onnx.optimizer import back_to_back_optimizer

    # 0.6.2 reads a weight with Tensor.numpy() each time an optimizer compares constants (~10^4 times for
    # BERT, ~2 ms each for OneFlow's sync): 20 s of a MiniLM export. The weights are moved to the host once.
    if not getattr(onnx_wrapper.Graph.__init__, "weights_on_host", False):
        onnx_wrapper.Graph.__init__ = weights_on_host(onnx_wrapper.Graph.__init__)

    # 0.6.2's back-to-back Transpose rule composes the first perm with itself (it reads node.attrs for node2),
    # so permute(0,2,1,3) followed by the transpose_b of attention's key matmul cancels to nothing: wrong scores.
    # ONNX Runtime merges consecutive transposes itself, so the rule is dropped.
    back_to_back_optimizer._func_map.pop("Transpose", None)

    # 0.6.2 has no handler for dim_gather (flow.gather, used to pick the [MASK] positions) and leaves it in the
    # graph as an unknown op; ONNX's GatherElements has the same semantics.
    @flow_op("dim_gather", onnx_op="GatherElements", flow_ibns=["input", "index"])
    class DimGather:  # noqa: F841  (registered by the decorator)
        @classmethod
        def Version_11(cls, ctx, node, **kwargs):
            node.attrs["axis"] = node.attrs.pop("dim")

    return Export


class HostArray:
    """A weight as the converter reads it (`.numpy()`), already a numpy array."""

    def __init__(self, array):
        self.array = array

    def numpy(self):
        return self.array


def weights_on_host(graph_init):
    def init(self, *args, **kwargs):
        graph_init(self, *args, **kwargs)
        self._param_dict = {name: HostArray(tensor.numpy()) for name, tensor in self._param_dict.items()}

    init.weights_on_host = True
    return init


@contextlib.contextmanager
def without_onnxsim():
    """The converter runs onnxsim when it is importable; it re-folds the fixed shapes make_dynamic rewrites
    and its result varies with its version, so it is hidden during the export."""
    saved = sys.modules.get("onnxsim")
    sys.modules["onnxsim"] = None  # makes `import onnxsim` raise ImportError
    try:
        yield
    finally:
        if saved is None:
            del sys.modules["onnxsim"]
        else:
            sys.modules["onnxsim"] = saved


def save_weights(model, directory):
    """The converter reads every variable from one flow.save dict: LayerNorm's constant buffers (expander,
    averager) are non-persistent, so they are added to the parameters here."""
    state = dict(model.state_dict())
    state.update(dict(model.named_buffers()))
    flow.save(state, directory)


def convert(model, task_def, fields, seq_length, opset, path):
    """Traces the task's eval graph at [TRACE_BATCH, seq_length] and writes the converter's (static) ONNX."""
    export = converter()
    inputs = [flow.tensor(trace_array(field, seq_length), dtype=flow.int32) for field in fields]
    graph = EvalGraph(task_def, model, False)
    graph(*inputs)  # compiles the graph the converter reads
    with tempfile.TemporaryDirectory() as weights, without_onnxsim():
        save_weights(model, weights)
        export(graph, weights, path, opset=opset)


def trace_array(field, seq_length):
    if field == "masked_lm_positions":
        return np.tile(np.arange(1, 4, dtype=np.int32), (TRACE_BATCH, 1))
    fill = 1 if field == "input_mask" else 0
    return np.full((TRACE_BATCH, seq_length), fill, dtype=np.int32)


# ---------------------------------------------------------------- static shapes -> dynamic axes


def tensor_shapes(proto):
    """{tensor name: [dims]} of every tensor ONNX shape inference can size in the static model."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    shapes = {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim] for info in infos}
    shapes.update({init.name: list(init.dims) for init in proto.graph.initializer})
    return shapes


def constants(proto):
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}


def add_constant(proto, name, array):
    from onnx import numpy_helper

    proto.graph.initializer.append(numpy_helper.from_array(np.asarray(array, dtype=np.int64), name))
    return name


def reshape_target(input_dims, target):
    """Reshape keeps the leading (batch, sequence) dims here: 0 copies them from the input at run time."""
    target = target.copy()
    for i, (dim, want) in enumerate(zip(input_dims, target)):
        if dim != want:
            break
        target[i] = 0
    return target


def expand_target(input_dims, target):
    """Expand broadcasts: a 1 keeps whatever size the input has there."""
    return np.array([1 if i < len(input_dims) and input_dims[i] == want else want for i, want in enumerate(target)])


def slice_ends(input_dims, starts, ends, axes):
    """A slice that ran to the end of a traced axis runs to its end at any size."""
    ends = ends.copy()
    for i, (start, end, axis) in enumerate(zip(starts, ends, axes)):
        if start == 0 and end == input_dims[axis]:
            ends[i] = INT64_MAX
    return ends


def position_slice_ends(proto, slice_node, axes):
    """Embeddings slice the position table to the sequence length: ends from input_ids' shape at run time."""
    from onnx import helper

    prefix = slice_node.name + "/dynamic"
    length = prefix + "/sequence_length"
    nodes = [
        helper.make_node("Shape", ["input_ids"], [prefix + "/shape"]),
        helper.make_node("Slice", [prefix + "/shape", add_constant(proto, prefix + "/one", [1]),
                                   add_constant(proto, prefix + "/two", [2])], [length]),
    ]
    parts = [length if axis == 0 else add_constant(proto, f"{prefix}/end{i}", [INT64_MAX])
             for i, axis in enumerate(axes)]
    nodes.append(helper.make_node("Concat", parts, [prefix + "/ends"], axis=0))
    for node in reversed(nodes):
        proto.graph.node.insert(0, node)
    return prefix + "/ends"


def make_dynamic(proto):
    """Rewrites the shape constants that pin batch, sequence length and [MASK] count to the traced sizes.

    Each rewritten shape is a new initializer: the converter shares equal constants between nodes.
    """
    shapes, values = tensor_shapes(proto), constants(proto)
    for node in list(proto.graph.node):
        if node.op_type == "Reshape":
            new = reshape_target(shapes[node.input[0]], values[node.input[1]])
            node.input[1] = add_constant(proto, node.name + "/dynamic_shape", new)
        elif node.op_type == "Expand":
            new = expand_target(shapes[node.input[0]], values[node.input[1]])
            node.input[1] = add_constant(proto, node.name + "/dynamic_shape", new)
        elif node.op_type == "Slice":
            starts, ends, axes = (values[name] for name in node.input[1:4])
            if "position_embeddings.weight" in node.input[0]:
                node.input[2] = position_slice_ends(proto, node, axes)
            else:
                node.input[2] = add_constant(proto, node.name + "/dynamic_ends",
                                             slice_ends(shapes[node.input[0]], starts, ends, axes))
    drop_unused_initializers(proto)
    for info in list(proto.graph.input) + list(proto.graph.output):
        for dim, name in zip(info.type.tensor_type.shape.dim, DYNAMIC_AXES[info.name]):
            if name is not None:
                dim.dim_param = name


# ---------------------------------------------------------------- LayerNorm as ONNX Runtime recognizes it


def producers(proto):
    return {output: node for node in proto.graph.node for output in node.output}


def layer_norm_nodes(sub, made_by, constant_values):
    """The nodes of one of modeling.LayerNorm's matmul-broadcast normalizations that end at Sub(x, mean), or None.

    The converter writes x - (x @ averager) @ expander, then ((c * c) @ averager + eps), Sqrt, Reciprocal,
    @ expander and Mul(c, .): the matmuls by the [H, 1] averager (1/H) and the [1, H] expander (ones).
    """
    def made(name, op_type):
        node = made_by.get(name)
        return node if node is not None and node.op_type == op_type else None

    def is_constant(name, shape, value):
        array = constant_values.get(name)
        return array is not None and array.shape == shape and np.allclose(array, value)

    if sub.op_type != "Sub":
        return None
    x, mean_expanded = sub.input
    expand_mean = made(mean_expanded, "MatMul")
    mean = expand_mean and made(expand_mean.input[0], "MatMul")
    if mean is None or mean.input[0] != x:
        return None
    averager = constant_values.get(mean.input[1])
    if averager is None or averager.ndim != 2:
        return None
    hidden = averager.shape[0]
    if not (is_constant(mean.input[1], (hidden, 1), 1.0 / hidden)
            and is_constant(expand_mean.input[1], (1, hidden), 1.0)):
        return None
    return x, hidden, mean, expand_mean


def plain_layer_norms(proto):
    """Rewrites each matmul-broadcast LayerNorm (a CPU training trick, see modeling.LayerNorm) as ReduceMean, Sub,
    Pow, ReduceMean, Add, Sqrt, Div: the same arithmetic, in the form ONNX Runtime's graph optimizer fuses into
    its LayerNormalization kernel (and with the residual add before it, SkipLayerNormalization)."""
    from onnx import helper, numpy_helper

    made_by, constant_values = producers(proto), constants(proto)
    consumers = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(name, op_type):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    two = "layer_norm/two"
    proto.graph.initializer.append(numpy_helper.from_array(np.array(2.0, dtype=np.float32), two))
    rewritten = 0
    for sub in list(proto.graph.node):
        found = layer_norm_nodes(sub, made_by, constant_values)
        if found is None:
            continue
        x, hidden, mean, expand_mean = found
        centered = sub.output[0]
        square = next(n for n in consumers[centered] if n.op_type == "Mul" and list(n.input) == [centered, centered])
        variance = only_consumer(square.output[0], "MatMul")
        plus_eps = only_consumer(variance.output[0], "Add")
        root = only_consumer(plus_eps.output[0], "Sqrt")
        inverse = only_consumer(root.output[0], "Reciprocal")
        expand_inverse = only_consumer(inverse.output[0], "MatMul")
        normalize = only_consumer(expand_inverse.output[0], "Mul")
        eps = next(name for name in plus_eps.input if name != variance.output[0])
        prefix = sub.name or centered
        new_nodes = [
            helper.make_node("ReduceMean", [x], [prefix + "/mean"], axes=[-1], keepdims=1),
            helper.make_node("Sub", [x, prefix + "/mean"], [centered]),
            helper.make_node("Pow", [centered, two], [prefix + "/square"]),
            helper.make_node("ReduceMean", [prefix + "/square"], [prefix + "/variance"], axes=[-1], keepdims=1),
            helper.make_node("Add", [prefix + "/variance", eps], [prefix + "/variance_eps"]),
            helper.make_node("Sqrt", [prefix + "/variance_eps"], [prefix + "/std"]),
            helper.make_node("Div", [centered, prefix + "/std"], list(normalize.output)),
        ]
        old_nodes = [mean, expand_mean, sub, square, variance, plus_eps, root, inverse, expand_inverse, normalize]
        position = min(list(proto.graph.node).index(node) for node in old_nodes)
        for node in old_nodes:
            proto.graph.node.remove(node)
        for offset, node in enumerate(new_nodes):
            proto.graph.node.insert(position + offset, node)
        rewritten += 1
    drop_unused_initializers(proto)
    return rewritten


def drop_unused_initializers(proto):
    used = {name for node in proto.graph.node for name in node.input}
    keep = [init for init in proto.graph.initializer if init.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


def rename(proto, old, new):
    for node in proto.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for info in list(proto.graph.input) + list(proto.graph.output):
        if info.name == old:
            info.name = new


def name_inputs_and_outputs(proto, fields, task):
    """The converter names inputs `_G_0_input.0.<index>_...`: they get run_infer's field names, outputs the
    task's output names. An input the outputs don't use (masked_lm_positions for nsp) is kept."""
    for info in list(proto.graph.input):
        match = re.search(r"input\.0\.(\d+)_", info.name)
        if match is None:
            raise ExportError(f"unexpected converter input name {info.name!r}")
        rename(proto, info.name, fields[int(match.group(1))])
    outputs = OUTPUT_NAMES[task]
    if len(proto.graph.output) != len(outputs):
        raise ExportError(f"the converter wrote {len(proto.graph.output)} outputs, {task} has {len(outputs)}")
    for info, name in zip(list(proto.graph.output), outputs):
        rename(proto, info.name, name)


def finish(path, fields, task, config):
    """Names, dynamic axes and metadata (read by utils/onnx_serving.py) on the converter's file, in place."""
    import onnx

    proto = onnx.load(path)
    name_inputs_and_outputs(proto, fields, task)
    make_dynamic(proto)
    plain_layer_norms(proto)
    metadata = {"task": task, "max_position_embeddings": config.max_position_embeddings,
                "vocab_size": config.vocab_size}
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


# ---------------------------------------------------------------- the self-check


def example_rows(tokenizer, config, rng):
    """Token rows of every built-in run_infer example: real text with a vocab, random ids without one."""
    if tokenizer is not None:
        return [run_infer.pack(tokenizer, a, b, config.max_position_embeddings)
                for a, b in run_infer.EXAMPLE_INPUTS.values()]
    lengths = rng.integers(5, 30, len(run_infer.EXAMPLE_INPUTS))
    return [([run_infer.MASK] * 3 + ["x"] * (n - 3), rng.integers(0, config.vocab_size, n), [0] * n) for n in lengths]


def check_batches(tokenizer, config, fields):
    """Batches of 4 and 1 rows at lengths that differ from the traced one."""
    rows = example_rows(tokenizer, config, np.random.default_rng(0))
    batches = []
    for chosen in (rows, rows[-1:]):
        batch = run_infer.packed_batch(chosen, max(len(row[1]) for row in chosen))
        batch["masked_lm_positions"], _ = run_infer.mask_positions(chosen)
        batches.append({field: batch[field] for field in fields})
    return batches


def oneflow_outputs(model, task_def, batch):
    with flow.no_grad():
        tensors = [flow.tensor(array) for array in batch.values()]
        return [t.numpy() for t in task_def.eval_outputs(model, tensors)]


def largest_difference(path, model, task_def, batches, task):
    """max |ONNX Runtime - OneFlow| over every output of every batch."""
    from utils import onnx_serving

    session = onnx_serving.open_session(path)
    worst = 0.0
    for batch in batches:
        expected = oneflow_outputs(model, task_def, batch)
        got = session.run(list(OUTPUT_NAMES[task]), onnx_serving.feeds(session, batch))
        for e, g in zip(expected, got):
            if e.shape != g.shape:
                raise ExportError(f"ONNX Runtime output shape {g.shape} differs from OneFlow's {e.shape}")
            worst = max(worst, float(np.abs(e - g).max()))
    return worst


# ---------------------------------------------------------------- command line


def build_parser():
    parser = argparse.ArgumentParser(description="Export a BERT checkpoint to ONNX (oneflow-onnx) and check it")
    cfg.add_model_args(parser)
    parser.add_argument("--task", choices=sorted(run_infer.TASKS), required=True,
                        help="What the model outputs, as run_infer.py --task (fill_mask and nsp: probabilities)")
    parser.add_argument("--output", required=True, help="The .onnx file to write")
    parser.add_argument("--opset", type=int, default=13, choices=range(11, 17), metavar="11..16",
                        help="ONNX opset (default 13)")
    parser.add_argument("--vocab_file", default=None,
                        help="vocab.txt for the check's text and for serving (default: the checkpoint's)")
    cfg.add_bool(parser, "--do_lower_case", default=True, help="Lower-case before WordPiece (the check's text)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="Largest allowed |ONNX Runtime - OneFlow| on the check's outputs")
    return parser


def load(args):
    """(model, config, task_def, fields) for --task from --model_load_dir, as run_infer.py loads it."""
    model_class, task_def = run_infer.TASKS[args.task]
    model, missing = run_infer.load_model(args, model_class, args.model_load_dir, args.init_format)
    run_infer.warn_random_heads(args.task, missing)
    model.eval()
    return model, model.config, task_def, task_def.eval_fields


def copy_vocab(vocab_file, output):
    target = os.path.join(os.path.dirname(os.path.abspath(output)), "vocab.txt")
    if vocab_file is None or os.path.abspath(vocab_file) == target:
        return
    if os.path.exists(target) and open(target, "rb").read() != open(vocab_file, "rb").read():
        cfg.warn(f"{target} exists and differs from {vocab_file}: left as it is; serve with --vocab_file")
        return
    shutil.copyfile(vocab_file, target)


def export(args):
    """Writes args.output and returns the largest ONNX Runtime - OneFlow difference of the check."""
    cfg.check_flags(args)
    args.device = "cpu"
    model, config, task_def, fields = load(args)
    seq_length = min(args.seq_length, config.max_position_embeddings)
    vocab_file = default_vocab_file(args.vocab_file, args.model_load_dir)
    tokenizer = load_wordpiece_tokenizer(vocab_file, args.do_lower_case) if vocab_file else None
    if tokenizer is not None:
        tokenizer.add_special_tokens([run_infer.MASK])
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    convert(model, task_def, fields, seq_length, args.opset, args.output)
    finish(args.output, fields, args.task, config)
    worst = largest_difference(args.output, model, task_def, check_batches(tokenizer, config, fields),
                               args.task)
    if not worst <= args.tolerance:
        raise ExportError(f"{args.output}: ONNX Runtime differs from OneFlow by {worst:.3g} "
                          f"(more than --tolerance {args.tolerance:g})")
    copy_vocab(vocab_file, args.output)
    print(f"wrote {args.output} ({args.task}, opset {args.opset}, dynamic batch and sequence length); "
          f"ONNX Runtime vs OneFlow: max |diff| {worst:.2e}", flush=True)
    return worst


def main(argv=None):
    args = cfg.parse_args(build_parser(), argv)
    with interrupts.main_guard("export_onnx", errors_exit_with=2):
        return export(args)


if __name__ == "__main__":
    main()
