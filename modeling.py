"""BERT (Devlin et al. 2018, https://arxiv.org/abs/1810.04805) in OneFlow.

One definition used by every script, in eager mode and inside nn.Graph, local or global.
Parameter names follow Hugging Face's BertModel so checkpoints convert by name.
It imports only oneflow, numpy, the standard library and utils/numpy_blas.py: no data, flags or files.

CPU speed notes (OneFlow 0.9, measured in ../shared/notes and tests/test_modeling.py):
- Broadcasting an [N, 1] tensor over [N, H] is ~50x slower than a same-shape op (N 4096, H 768), so
  LayerNorm broadcasts its row statistics through a matmul with a ones row.
- Denormal floats make the CPU GEMM ~150x slower, so every weight starts at N(0, 0.02).
- In eager mode on CPU, dense layers, attention and LayerNorm run on numpy's BLAS
  (utils/numpy_blas.py, 4-8x faster GEMMs); graph, global and CUDA tensors use the OneFlow ops below.
"""
import json
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import oneflow as flow
import oneflow.nn as nn
import oneflow.nn.functional as F

from utils import numpy_blas


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")

    @classmethod
    def from_dict(cls, d):
        """Reads a HF or Google config dict; unknown keys (model_type, architectures, ...) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json_file(cls, path):
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self):
        return asdict(self)

    def to_json_file(self, path):
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"gelu": F.gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "relu": F.relu}


def linear(x, weight, bias):
    """y = x @ weight^T + bias for x of any rank; the one place every dense layer goes through."""
    if bias is not None and numpy_blas.usable(x, weight, bias):
        return numpy_blas.Linear.apply(x, weight, bias)
    y = flow.matmul(x, weight, transpose_b=True)
    return y + bias if bias is not None else y


class Linear(nn.Linear):
    def forward(self, x):
        return linear(x, self.weight, self.bias)


class LayerNorm(nn.Module):
    """LayerNorm over the last dim (Ba et al. 2016) with row statistics broadcast by matmul.

    mean and variance are [N, 1]; multiplying by a ones row [1, H] expands them to [N, H]
    ~25x faster than OneFlow 0.9's CPU broadcast (N 4096, H 768), and the result equals nn.LayerNorm to ~1e-6.
    """

    def __init__(self, hidden_size, eps=1e-12):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(flow.ones(hidden_size))
        self.bias = nn.Parameter(flow.zeros(hidden_size))
        # Constant buffers (not saved) follow the module to a device or a global placement.
        self.register_buffer("expander", flow.ones(1, hidden_size), persistent=False)
        self.register_buffer("averager", flow.ones(hidden_size, 1) / hidden_size, persistent=False)

    def forward(self, x):
        if numpy_blas.usable(x, self.weight, self.bias):
            return numpy_blas.LayerNorm.apply(x, self.weight, self.bias, flow.tensor(self.eps))
        centered = x - flow.matmul(flow.matmul(x, self.averager), self.expander)
        variance = flow.matmul(centered * centered, self.averager)
        inv_std = flow.matmul(flow.rsqrt(variance + self.eps), self.expander)
        return centered * inv_std * self.weight + self.bias


class Dropout(nn.Module):
    """Dropout (Srivastava et al. 2014) with a mask stream of its own, seeded from the global RNG.

    OneFlow 0.9's nn.Dropout gives every module a Generator with the same fixed seed, whatever
    flow.manual_seed says, so all dropouts of one shape draw the same mask at every step; inside
    nn.Graph the dropout op ignores generators and seeds altogether. Each module here owns a seed drawn at
    construction. Eager CPU tensors take their keep masks from a numpy generator with that seed, so the numpy
    kernels can apply them inside their own passes (host_keep_mask). A graph draws the keep mask with flow.rand,
    which honours a OneFlow generator in a graph; other eager devices run the fused kernel with it.

    A OneFlow generator's state can't be saved (get_state doesn't track the CPU kernels' use), and a compiled graph
    keeps the stream it was compiled with, so exact resume restarts the streams instead: `restart(segment)`
    reseeds both generators from (seed, segment), and the trainer restarts every stream (and recompiles a graph)
    at each checkpoint step, in a fresh run and in a resumed one alike.
    """

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.seed = int(flow.randint(0, 2 ** 62, (1,)).item())
        self.generator = flow.Generator()
        self.restart(0)

    def offset_seed(self, offset):
        """Gives data-parallel ranks different masks: each rank offsets the seed by its rank."""
        self.seed += offset
        self.restart(0)

    def restart(self, segment):
        # An odd 64-bit multiplier (the golden ratio's) spreads consecutive segments over the seed space.
        seed = (self.seed + segment * 0x9E3779B97F4A7C15) % 2 ** 63
        self.generator.manual_seed(seed)
        self.host_generator = np.random.default_rng(seed)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        scale = 1.0 / (1.0 - self.p)
        if x.is_lazy:
            if x.is_global:
                noise = flow.rand(*x.shape, placement=x.placement, sbp=x.sbp, generator=self.generator)
            else:
                noise = flow.rand(*x.shape, device=x.device, generator=self.generator)
            return x * (noise >= self.p).to(x.dtype) * scale
        if x.is_local and x.device.type == "cpu":
            return x * self.host_keep_mask(x.shape)
        return flow._C.dropout(x, self.p, True, False, self.generator, addend=None)

    def host_keep_mask(self, shape):
        """The next mask of the eager CPU stream as keep / (1 - p) in float32; a 1-element 1 when nothing drops.

        The numpy kernels take it to fuse dropout into their own passes; forward applies the same draw."""
        if not self.training or self.p == 0:
            return flow.ones(1)
        keep = self.host_generator.random(tuple(shape), dtype=np.float32) >= self.p
        return flow.from_numpy(keep.astype(np.float32) * np.float32(1.0 / (1.0 - self.p)))


def offset_dropout_seeds(model, offset):
    for module in model.modules():
        if isinstance(module, Dropout):
            module.offset_seed(offset)


def restart_dropout_streams(model, segment):
    for module in model.modules():
        if isinstance(module, Dropout):
            module.restart(segment)


class BertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        seq_length = input_ids.shape[1]
        # Slicing the table (not an arange lookup) works the same for local and global tensors.
        positions = self.position_embeddings.weight[:seq_length].unsqueeze(0)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + positions
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def split_heads(self, x):
        batch, seq, _ = x.shape
        return x.reshape(batch, seq, self.num_heads, self.head_size).permute(0, 2, 1, 3)

    def forward(self, hidden, attention_bias):
        batch, seq, hidden_size = hidden.shape
        if numpy_blas.usable(hidden, attention_bias):
            # Heads stay in [B, S, H, D]; numpy's batched GEMMs read them through strides.
            heads = (batch, seq, self.num_heads, self.head_size)
            query, key, value = (layer(hidden).reshape(heads) for layer in (self.query, self.key, self.value))
            scale = flow.tensor(1.0 / math.sqrt(self.head_size))
            probs = numpy_blas.AttentionProbs.apply(query, key, attention_bias, scale)
            keep = self.dropout.host_keep_mask(probs.shape)
            return numpy_blas.AttentionContext.apply(probs, value, keep).reshape(batch, seq, hidden_size)
        query = self.split_heads(self.query(hidden))
        key = self.split_heads(self.key(hidden))
        value = self.split_heads(self.value(hidden))
        scores = flow.matmul(query, key, transpose_b=True, alpha=1.0 / math.sqrt(self.head_size))
        probs = self.dropout(flow.softmax(scores + attention_bias, dim=-1))
        context = flow.matmul(probs, value)
        return context.permute(0, 2, 1, 3).reshape(batch, seq, hidden_size)


class BertSelfOutput(nn.Module):
    """Dense + dropout + residual + LayerNorm, used after attention and after the MLP."""

    def __init__(self, in_size, hidden_size, config):
        super().__init__()
        self.dense = Linear(in_size, hidden_size)
        self.LayerNorm = LayerNorm(hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        hidden = self.dense(x)
        norm = self.LayerNorm
        if self.training and self.dropout.p > 0 and numpy_blas.usable(hidden, residual, norm.weight, norm.bias):
            keep = self.dropout.host_keep_mask(hidden.shape)
            return numpy_blas.DropoutResidualLayerNorm.apply(hidden, keep, residual, norm.weight, norm.bias,
                                                             flow.tensor(norm.eps))
        return norm(self.dropout(hidden) + residual)


class BertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config.hidden_size, config.hidden_size, config)

    def forward(self, hidden, attention_bias):
        return self.output(self.self(hidden, attention_bias), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.activation(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertSelfOutput(config.intermediate_size, config.hidden_size, config)

    def forward(self, hidden, attention_bias):
        attended = self.attention(hidden, attention_bias)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden, attention_bias):
        for layer in self.layer:
            hidden = layer(hidden, attention_bias)
        return hidden


class BertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, sequence_output):
        return flow.tanh(self.dense(sequence_output[:, 0]))


class BertPreTrainedModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config

    def init_weights(self):
        """N(0, initializer_range) for dense and embedding weights, zero biases, LayerNorm (1, 0)."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for name, param in self.named_parameters():
            if name.endswith("predictions.bias"):
                nn.init.zeros_(param)


class BertModel(BertPreTrainedModel):
    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids, attention_mask, token_type_ids):
        """Returns (sequence_output [B, S, H], pooled_output [B, H] or None)."""
        # Additive mask as in the reference BERT: 0 where attended, -10000 at padding.
        mask = attention_mask.to(flow.float32)
        attention_bias = ((mask - 1.0) * 10000.0).unsqueeze(1).unsqueeze(2)
        sequence_output = self.encoder(self.embeddings(input_ids, token_type_ids), attention_bias)
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        return sequence_output, pooled


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.activation(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """MLM head; its decoder is the word-embedding matrix itself (weight tying), passed in.

    Holding no decoder parameter of its own keeps the tie intact through to_global and
    checkpoint loading; HF export writes the shared matrix as cls.predictions.decoder.weight.
    """

    def __init__(self, config):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = nn.Parameter(flow.zeros(config.vocab_size))

    def forward(self, x, word_embeddings):
        return linear(self.transform(x), word_embeddings, self.bias)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = Linear(config.hidden_size, 2)


def gather_positions(sequence_output, positions):
    """sequence_output [B, S, H], positions [B, P] -> [B, P, H], the vectors at those positions."""
    batch, seq, hidden = sequence_output.shape
    index = positions.to(flow.int64).unsqueeze(-1).expand(-1, -1, hidden)
    return flow.gather(sequence_output, 1, index)


class BertForPreTraining(BertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.init_weights()

    def forward(self, input_ids, attention_mask, token_type_ids, masked_lm_positions):
        """Returns (MLM logits [B, P, V] at the masked positions only, NSP logits [B, 2])."""
        sequence_output, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        masked_output = gather_positions(sequence_output, masked_lm_positions)
        word_embeddings = self.bert.embeddings.word_embeddings.weight
        mlm_logits = self.cls.predictions(masked_output, word_embeddings)
        return mlm_logits, self.cls.seq_relationship(pooled)


def pretraining_loss(mlm_logits, nsp_logits, masked_lm_ids, masked_lm_weights, next_sentence_labels):
    """BERT pre-training loss: weighted mean MLM cross-entropy over real predictions + NSP cross-entropy.

    Padding predictions have weight 0, as in the reference create_pretraining_data output.
    Returns (total, mlm, nsp) scalars.
    """
    vocab = mlm_logits.shape[-1]
    per_token = F.cross_entropy(
        mlm_logits.reshape(-1, vocab), masked_lm_ids.reshape(-1).to(flow.int64), reduction="none"
    )
    weights = masked_lm_weights.reshape(-1).to(mlm_logits.dtype)
    mlm_loss = (per_token * weights).sum() / (weights.sum() + 1e-5)
    nsp_loss = F.cross_entropy(nsp_logits, next_sentence_labels.reshape(-1).to(flow.int64))
    return mlm_loss + nsp_loss, mlm_loss, nsp_loss


class BertForQuestionAnswering(BertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids, attention_mask, token_type_ids):
        """Returns (start_logits [B, S], end_logits [B, S])."""
        sequence_output, _ = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.qa_outputs(sequence_output)
        return logits[:, :, 0], logits[:, :, 1]


def squad_loss(start_logits, end_logits, start_positions, end_positions):
    """Mean of start and end cross-entropies (the reference run_squad.py loss)."""
    start = F.cross_entropy(start_logits, start_positions.reshape(-1).to(flow.int64))
    end = F.cross_entropy(end_logits, end_positions.reshape(-1).to(flow.int64))
    return (start + end) / 2
