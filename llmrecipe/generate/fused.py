"""An onnxruntime-only decoding graph for a LLaMA- or GPT-2-style export: about a third of the operators per token,
and a cache that is written in place instead of copied.

The portable `model.onnx` (export/onnx.py) runs in any ONNX runtime, but each token pays for ~35 operators per
layer: the cache grows by Concat (a fresh copy of the whole past per layer and side), rotary is spelled out in
splits and products, q/k/v are transposed to heads. onnxruntime's contrib operators do that work in fewer kernels:
GroupQueryAttention (com.microsoft) takes the packed q/k/v projection, applies rotary itself and writes the new
keys/values into a buffer that is both its past input and its present output (bound to the same memory through
IOBinding); Skip(Simplified)LayerNormalization adds the residual (and a bias) and normalizes in one kernel.

The graph is built when an export is loaded, from the portable graph's own weights, recognised by the structure
export/onnx.py gives them, so an artifact holds one model. `read_weights` returns None for a graph it does not
recognise (an export below opset 23, which spells out norms and GELU; weights in external data; a head size that
is not a multiple of 16), which then decodes with the portable graph. GroupQueryAttention places every row's
tokens at the same slots with positions counted from slot 0, so this graph serves batches without padding (batch
1, prompts of one length); OnnxDecoder keeps the portable graph for the rest. export/parity.py checks both graphs
against torch.

Inputs: input_ids (B, T) int64, seqlens_k (B,) int32 = past + T - 1, total_sequence_length () int32 = past + T,
past_key_values.{i}.key/value (B, K, S, E) float32 buffers of S >= past + T slots, the first `past` filled.
Outputs: logits (B, T, V) and present.{i}.key/value, the same buffers with slots [past, past + T) written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

OPSETS = {"": 23, "com.microsoft": 1}
CONTRIB = ("GroupQueryAttention", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization")
"""The operators of onnxruntime's com.microsoft domain the graphs use."""
HEAD_DIM_MULTIPLE = 16
"""onnxruntime's CPU GroupQueryAttention refuses other head sizes."""
IR_VERSION = 10
"""onnxruntime 1.31 reads IR versions up to 13; onnx 1.23's helper would stamp 14 by default."""


@dataclass
class LlamaWeights:
    """A LLaMA-style decoder as the fused graph needs it; matrices are (in, out), as MatMul takes them."""

    embed: np.ndarray  # (V, D)
    cos: np.ndarray  # (S, E/2): rotary tables, one angle per pair
    sin: np.ndarray  # (S, E/2)
    layers: list[tuple[np.ndarray, ...]]  # attn_norm (D,), qkv (D, (H + 2K) E), o (H E, D), mlp_norm, gate_up, down
    norm: np.ndarray  # (D,)
    lm_head: np.ndarray  # (D, V)
    eps: float


@dataclass
class GPT2Weights:
    """A GPT-2 style decoder as the fused graph needs it; matrices are (in, out), as MatMul takes them."""

    embed: np.ndarray  # (V, D)
    positions: np.ndarray  # (S, D)
    layers: list[tuple[np.ndarray, ...]]  # ln_1 w, b; qkv (D, 3 H E), b; proj (H E, D), b; ln_2 w, b; fc, b; out, b
    norm: tuple[np.ndarray, np.ndarray]  # (D,) weight and bias
    lm_head: np.ndarray  # (D, V)
    eps: float


def read_weights(proto: Any, shape: Any) -> LlamaWeights | GPT2Weights | None:
    """The weights of a portable export (an onnx.ModelProto), found by the graph's structure; None if it is not one
    the fused graph serves."""
    import onnx

    if shape.head_dim % HEAD_DIM_MULTIPLE or shape.qkv_bias or shape.qk_norm:
        return None  # the fused graph has no q/k/v biases or q/k norms (Qwen): the portable graph serves those
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer):
        return None  # a model over 1 GiB: a second in-memory copy would not fit a protobuf
    read = {"llama": _read_llama, "gpt2": _read_gpt2}.get(shape.arch)
    return read(_Weights(proto), shape) if read else None


class _Weights:
    """The initializers of a graph, looked up by the operators that use them, in graph order."""

    def __init__(self, proto: Any):
        from onnx import numpy_helper

        self.nodes = list(proto.graph.node)
        self.arrays = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}

    def of(self, op: str, position: int = 1, other: str | None = None) -> list[tuple[np.ndarray, Any]]:
        """(initializer at input `position`, node) of each `op` node that has one there (and `other` as its other
        input, when given)."""
        return [(self.arrays[node.input[position]], node) for node in self.nodes
                if node.op_type == op and len(node.input) > position and node.input[position] in self.arrays
                and (other is None or other in node.input)]

    def bias_after(self, node: Any) -> np.ndarray | None:
        """The initializer an Add node adds to `node`'s output (a linear layer's bias)."""
        for add in self.nodes:
            if add.op_type == "Add" and node.output[0] in add.input:
                (bias,) = [name for name in add.input if name != node.output[0]] or [""]
                return self.arrays.get(bias)
        return None


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _read_llama(weights: _Weights, shape: Any) -> LlamaWeights | None:
    norms, matmuls = weights.of("RMSNormalization"), [w for w, _ in weights.of("MatMul")]
    tables, embed = weights.of("Gather", 0, "position_ids"), weights.of("Gather", 0, "input_ids")
    L, H, K, E, D = shape.n_layer, shape.n_head, shape.n_kv_head, shape.head_dim, shape.d_model
    if len(norms) != 2 * L + 1 or len(tables) != 2 or len(embed) != 1:
        return None
    F = shape.ffn_hidden
    # Per layer the model's q, k, v, o, gate, up and down projections, in the order its forward runs them.
    expected = [(D, H * E), (D, K * E), (D, K * E), (H * E, D), (D, F), (D, F), (F, D)] * L
    if [m.shape for m in matmuls] != [*expected, (D, shape.vocab_size)]:
        return None
    cos, signed_sin = sorted((table for table, _ in tables), key=lambda table: -table[0, 0])  # position 0: cos 1
    half = E // 2
    layers = []
    for i in range(L):
        q, k, v, o, gate, up, down = matmuls[7 * i : 7 * i + 7]
        layers.append((norms[2 * i][0], np.concatenate([q, k, v], axis=1), o, norms[2 * i + 1][0],
                       np.concatenate([gate, up], axis=1), down))
    eps = _attribute(norms[0][1], "epsilon")
    return LlamaWeights(embed[0][0], cos[:, :half], signed_sin[:, half:], layers, norms[-1][0], matmuls[-1], eps)


def _read_gpt2(weights: _Weights, shape: Any) -> GPT2Weights | None:
    norms = [(w, weights.arrays.get(node.input[2]), node) for w, node in weights.of("LayerNormalization")]
    matmuls = weights.of("MatMul")
    positions, embed = weights.of("Gather", 0, "position_ids"), weights.of("Gather", 0, "input_ids")
    L, H, E, D, F = shape.n_layer, shape.n_head, shape.head_dim, shape.d_model, shape.ffn_hidden
    gelus = [node for node in weights.nodes if node.op_type == "Gelu"]
    if len(norms) != 2 * L + 1 or len(positions) != 1 or len(embed) != 1 or len(gelus) != L:
        return None
    if any(_attribute(gelu, "approximate") != b"tanh" for gelu in gelus):
        return None
    expected = [(D, 3 * H * E), (H * E, D), (D, F), (F, D)] * L
    if [m.shape for m, _ in matmuls] != [*expected, (D, shape.vocab_size)]:
        return None
    biases = [weights.bias_after(node) for _, node in matmuls[:-1]]
    if any(b is None for b in biases) or any(b is None for _, b, _ in norms):
        return None
    layers = []
    for i in range(L):
        (ln1_w, ln1_b, _), (ln2_w, ln2_b, _) = norms[2 * i], norms[2 * i + 1]
        (qkv, _), (proj, _), (fc, _), (out, _) = matmuls[4 * i : 4 * i + 4]
        qkv_b, proj_b, fc_b, out_b = biases[4 * i : 4 * i + 4]
        layers.append((ln1_w, ln1_b, qkv, qkv_b, proj, proj_b, ln2_w, ln2_b, fc, fc_b, out, out_b))
    eps = _attribute(norms[0][2], "epsilon")
    return GPT2Weights(embed[0][0], positions[0][0], layers, norms[-1][:2], matmuls[-1][0], eps)


def fused_graph(weights: LlamaWeights | GPT2Weights, shape: Any):
    """The fused decoding graph (see the module docstring) with these weights inside, as an onnx.ModelProto."""
    graph = _Graph()
    (_llama_nodes if isinstance(weights, LlamaWeights) else _gpt2_nodes)(graph, weights, shape)
    return graph.model(shape)


class _Graph:
    """The nodes and initializers of a fused graph, and its inputs and outputs (see the module docstring)."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []

    def constant(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def add(self, op: str, inputs: list[str], outputs: list[str], **attributes) -> None:
        from onnx import helper

        domain = "com.microsoft" if op in CONTRIB else ""
        self.nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attributes))

    def attention(self, layer: int, qkv: str, shape: Any, rotary: bool) -> str:
        """GroupQueryAttention over the packed projection (B, T, (H + 2K) E), writing the layer's cache in place:
        -> (B, T, H E)."""
        past = [f"past_key_values.{layer}.{side}" for side in ("key", "value")]
        present = [f"present.{layer}.{side}" for side in ("key", "value")]
        tables = ["cos", "sin"] if rotary else []
        self.add("GroupQueryAttention", [qkv, "", "", *past, "seqlens_k", "total_sequence_length", *tables],
                 [f"{layer}.y", *present], num_heads=shape.n_head, kv_num_heads=shape.n_kv_head, do_rotary=int(rotary))
        return f"{layer}.y"

    def model(self, shape: Any):
        from onnx import TensorProto, helper

        cache = ["batch", shape.n_kv_head, "slots", shape.head_dim]
        inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                  helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
                  helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, [])]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", shape.vocab_size])]
        for i in range(shape.n_layer):
            for side in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{side}", TensorProto.FLOAT, cache))
                outputs.append(helper.make_tensor_value_info(f"present.{i}.{side}", TensorProto.FLOAT, cache))
        graph = helper.make_graph(self.nodes, "llmrecipe_fused_decoder", inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in OPSETS.items()])
        model.ir_version = IR_VERSION
        return model


def _llama_nodes(graph: _Graph, weights: LlamaWeights, shape: Any) -> None:
    eps, constant = weights.eps, graph.constant
    graph.add("Gather", [constant("embed", weights.embed), "input_ids"], ["x"])  # (B, T, D)
    constant("cos", weights.cos)
    constant("sin", weights.sin)
    residual, branch = "x", None  # the stream, and the last block's output not yet added to it
    for i, (attn_norm, qkv, o, mlp_norm, gate_up, down) in enumerate(weights.layers):
        if branch is None:
            graph.add("SimplifiedLayerNormalization", [residual, constant(f"{i}.attn_norm", attn_norm)], [f"{i}.h"],
                      epsilon=eps, axis=-1)
        else:  # add the previous MLP's output and normalize, in one kernel
            graph.add("SkipSimplifiedLayerNormalization", [branch, residual, constant(f"{i}.attn_norm", attn_norm)],
                      [f"{i}.h", "", "", f"{i}.x"], epsilon=eps)
            residual = f"{i}.x"
        graph.add("MatMul", [f"{i}.h", constant(f"{i}.qkv", qkv)], [f"{i}.qkv_out"])  # (B, T, (H + 2K) E)
        y = graph.attention(i, f"{i}.qkv_out", shape, rotary=True)  # rotary inside
        graph.add("MatMul", [y, constant(f"{i}.o", o)], [f"{i}.attn"])
        graph.add("SkipSimplifiedLayerNormalization", [f"{i}.attn", residual, constant(f"{i}.mlp_norm", mlp_norm)],
                  [f"{i}.m", "", "", f"{i}.x_attn"], epsilon=eps)
        graph.add("MatMul", [f"{i}.m", constant(f"{i}.gate_up", gate_up)], [f"{i}.gate_up_out"])  # (B, T, 2F)
        graph.add("Split", [f"{i}.gate_up_out"], [f"{i}.gate", f"{i}.up"], axis=-1, num_outputs=2)
        graph.add("Sigmoid", [f"{i}.gate"], [f"{i}.sigmoid"])
        graph.add("Mul", [f"{i}.gate", f"{i}.sigmoid"], [f"{i}.silu"])
        graph.add("Mul", [f"{i}.silu", f"{i}.up"], [f"{i}.act"])
        graph.add("MatMul", [f"{i}.act", constant(f"{i}.down", down)], [f"{i}.mlp"])
        residual, branch = f"{i}.x_attn", f"{i}.mlp"
    graph.add("SkipSimplifiedLayerNormalization", [branch, residual, constant("norm", weights.norm)], ["final"],
              epsilon=eps)
    graph.add("MatMul", ["final", constant("lm_head", weights.lm_head)], ["logits"])  # (B, T, V)


def _gpt2_nodes(graph: _Graph, weights: GPT2Weights, shape: Any) -> None:
    eps, constant = weights.eps, graph.constant
    # Learned positions: without padding, the new tokens sit at rows [total - T, total) of the table.
    graph.add("Shape", ["input_ids"], ["new"], start=1, end=2)  # (1,) T
    graph.add("Cast", ["total_sequence_length"], ["total_int64"], to=7)
    graph.add("Unsqueeze", ["total_int64", constant("axis_0", np.zeros(1, dtype=np.int64))], ["total"])  # (1,)
    graph.add("Sub", ["total", "new"], ["start"])
    graph.add("Slice", [constant("positions", weights.positions), "start", "total", "axis_0"], ["placed"])  # (T, D)
    graph.add("Gather", [constant("embed", weights.embed), "input_ids"], ["tokens"])  # (B, T, D)
    graph.add("Add", ["tokens", "placed"], ["x"])
    residual, branch, branch_bias = "x", None, None
    for i, (ln1_w, ln1_b, qkv, qkv_b, proj, proj_b, ln2_w, ln2_b, fc, fc_b, out, out_b) in enumerate(weights.layers):
        norm = [constant(f"{i}.ln_1.weight", ln1_w), constant(f"{i}.ln_1.bias", ln1_b)]
        if branch is None:
            graph.add("LayerNormalization", [residual, *norm], [f"{i}.h"], epsilon=eps, axis=-1)
        else:  # add the previous MLP's output and its bias, and normalize, in one kernel
            graph.add("SkipLayerNormalization", [branch, residual, *norm, branch_bias], [f"{i}.h", "", "", f"{i}.x"],
                      epsilon=eps)
            residual = f"{i}.x"
        graph.add("MatMul", [f"{i}.h", constant(f"{i}.qkv", qkv)], [f"{i}.qkv_mm"])
        graph.add("Add", [f"{i}.qkv_mm", constant(f"{i}.qkv.bias", qkv_b)], [f"{i}.qkv_out"])  # (B, T, 3 H E)
        y = graph.attention(i, f"{i}.qkv_out", shape, rotary=False)
        graph.add("MatMul", [y, constant(f"{i}.proj", proj)], [f"{i}.attn"])
        norm = [constant(f"{i}.ln_2.weight", ln2_w), constant(f"{i}.ln_2.bias", ln2_b)]
        graph.add("SkipLayerNormalization", [f"{i}.attn", residual, *norm, constant(f"{i}.proj.bias", proj_b)],
                  [f"{i}.m", "", "", f"{i}.x_attn"], epsilon=eps)
        graph.add("MatMul", [f"{i}.m", constant(f"{i}.fc", fc)], [f"{i}.fc_mm"])
        graph.add("Add", [f"{i}.fc_mm", constant(f"{i}.fc.bias", fc_b)], [f"{i}.fc_out"])  # (B, T, F)
        graph.add("Gelu", [f"{i}.fc_out"], [f"{i}.gelu"], approximate="tanh")
        graph.add("MatMul", [f"{i}.gelu", constant(f"{i}.out", out)], [f"{i}.mlp"])
        residual, branch, branch_bias = f"{i}.x_attn", f"{i}.mlp", constant(f"{i}.out.bias", out_b)
    norm = [constant("norm.weight", weights.norm[0]), constant("norm.bias", weights.norm[1])]
    graph.add("SkipLayerNormalization", [branch, residual, *norm, branch_bias], ["final"], epsilon=eps)
    graph.add("MatMul", ["final", constant("lm_head", weights.lm_head)], ["logits"])  # (B, T, V)


class FusedCache:
    """Per layer and side a (B, K, S, E) buffer that the graph reads as past and writes as present, bound once.

    The lengths and a one-token step's id and logits are numpy arrays bound once as well: a decoding step writes
    the new token and lengths into them and runs, with no allocation or binding per token.
    """

    def __init__(self, session, shape: Any, batch: int, slots: int):
        import onnxruntime

        size = (batch, shape.n_kv_head, slots, shape.head_dim)
        self.buffers = [np.zeros(size, dtype=np.float32) for _ in range(2 * shape.n_layer)]
        self.length = 0
        """Slots filled, the same in every row."""
        self.session, self.shape = session, shape
        self.seqlens = np.zeros(batch, dtype=np.int32)  # (B,) past + new - 1
        self.total = np.zeros((), dtype=np.int32)  # past + new
        self.token = np.zeros((batch, 1), dtype=np.int64)  # (B, 1)
        self.logits = np.zeros((batch, 1, shape.vocab_size), dtype=np.float32)  # (B, 1, V)
        bind = onnxruntime.OrtValue.ortvalue_from_numpy  # shares the array's memory
        self.binding = session.io_binding()
        for layer in range(shape.n_layer):
            for offset, side in enumerate(("key", "value")):
                value = bind(self.buffers[2 * layer + offset])
                self.binding.bind_ortvalue_input(f"past_key_values.{layer}.{side}", value)
                self.binding.bind_ortvalue_output(f"present.{layer}.{side}", value)
        self.binding.bind_ortvalue_input("seqlens_k", bind(self.seqlens))
        self.binding.bind_ortvalue_input("total_sequence_length", bind(self.total))
        self._step_token, self._step_logits = bind(self.token), bind(self.logits)
        self.binding.bind_output("logits")  # bound last: get_outputs()[-1]
        self._stepping = False

    @property
    def slots(self) -> int:
        return self.buffers[0].shape[2]

    def run(self, ids: np.ndarray) -> np.ndarray:
        """ids (B, T) new tokens at slots [length, length + T) -> logits (B, T, V); a one-token step's logits are a
        view of a buffer that the next step overwrites."""
        new = ids.shape[1]
        if self.length + new > self.slots:
            raise ValueError(f"the cache holds {self.length} of {self.slots} slots; {new} more do not fit")
        if self.length + new > self.shape.seq_len:  # rotary and position tables end there
            raise ValueError(f"{self.length + new} tokens are more than the model's context of {self.shape.seq_len}")
        self.seqlens[:] = self.length + new - 1
        self.total[...] = self.length + new
        if new == 1:
            if not self._stepping:
                self.binding.bind_ortvalue_input("input_ids", self._step_token)
                self.binding.bind_ortvalue_output("logits", self._step_logits)
                self._stepping = True
            self.token[:] = ids
            self.session.run_with_iobinding(self.binding)
            self.length += 1
            return self.logits
        self._stepping = False
        self.binding.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int64))
        self.binding.bind_output("logits")
        self.session.run_with_iobinding(self.binding)
        self.length += new
        return self.binding.get_outputs()[-1].numpy()

    def select(self, rows: np.ndarray) -> FusedCache:
        """A cache of only these batch rows (a copy: rows leave a batch rarely, once each)."""
        kept = FusedCache(self.session, self.shape, len(rows), self.slots)
        for mine, theirs in zip(kept.buffers, self.buffers):
            mine[:] = theirs[rows]
        kept.length = self.length
        return kept

    def filled(self) -> list[np.ndarray]:
        """The filled slots of each buffer, (B, K, length, E), as the portable graph's present outputs."""
        return [buffer[:, :, : self.length] for buffer in self.buffers]
