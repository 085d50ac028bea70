"""Lowering of ultralytics backbone/neck blocks (YOLOv8, YOLO11, YOLO26) from their inert records.

Each handler takes the block's record, its input `Value`, the state-dict key prefix and the
torch.onnx scope, and emits the block's eval-mode forward exactly as ultralytics computes it
(`ultralytics/nn/modules/block.py`, release 8.4): Conv (conv -> bn -> act), Bottleneck, C2f,
C3k2 (C2f whose inner blocks are Bottlenecks, C3ks, or Bottleneck+PSABlock pairs), C3/C3k,
SPP/SPPF (with YOLO26's residual), C2PSA, PSABlock and its multi-head Attention. Channel counts,
flags (`add`, `c`, `n`) and attention sizes come from the record itself, so every scale lowers
without a table of architectures. An unknown block is refused by name before anything is emitted
(see `SUPPORTED_MODULES`).
"""

from __future__ import annotations

from collections.abc import Callable

from yolograph.errors import ModelError
from yolograph.frontends.pt.checkpoint import ModuleRecord
from yolograph.frontends.pt.emitter import (
    Emitter,
    Value,
    activation,
    batchnorm2d,
    binary,
    child,
    concat,
    conv2d,
    conv_transpose2d,
    maxpool2d,
    ordered_children,
    reshape,
    split,
    upsample,
)

Handler = Callable[[Emitter, ModuleRecord, Value, str, str], Value]


def lower_block(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """Emit one block's forward on `x`; ModelError naming the block when yolograph does not know it."""
    handler = BLOCKS.get(record.type_name)
    if handler is None:
        raise ModelError(
            f"unsupported: {record.type_name} at {key}. yolograph lowers the blocks "
            f"{', '.join(sorted(BLOCKS))}; export this model to ONNX with ultralytics instead."
        )
    return handler(em, record, x, key, scope)


def _sub(em: Emitter, record: ModuleRecord, name: str, x: Value, key: str, scope: str) -> Value:
    """Lower submodule `name` of `record` (keys and scopes extended the way torch names them)."""
    return lower_block(em, child(record, name, key), x, f"{key}.{name}", f"{scope}/{name}")


# -- primitives as blocks -----------------------------------------------------------------------------


def conv(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """ultralytics Conv / DWConv: Conv2d -> BatchNorm2d -> act (a fused Conv has no bn and a biased conv)."""
    y = conv2d(em, x, child(record, "conv", key), f"{key}.conv", f"{scope}/conv")
    bn = record.children.get("bn")
    if isinstance(bn, ModuleRecord):
        if bn.type_name != "BatchNorm2d":
            raise ModelError(f"unsupported: {bn.type_name} as the norm of Conv at {key}; BatchNorm2d only.")
        y = batchnorm2d(em, y, bn, f"{key}.bn", f"{scope}/bn")
    act = record.children.get("act")
    return activation(em, y, act if isinstance(act, ModuleRecord) else None, f"{key}.act", f"{scope}/act")


def plain_conv2d(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    return conv2d(em, x, record, key, scope)


def transposed_conv2d(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    return conv_transpose2d(em, x, record, key, scope)


def sequential(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """nn.Sequential: the children in order."""
    for name, module in ordered_children(record):
        x = lower_block(em, module, x, f"{key}.{name}", f"{scope}/{scope.rsplit('/', 1)[-1]}.{name}")
    return x


def identity(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    return x


def nearest_upsample(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    return upsample(em, x, record, key, scope)


def maxpool(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    return maxpool2d(em, x, record, key, scope)


# -- CSP blocks ---------------------------------------------------------------------------------------


def bottleneck(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """Bottleneck: cv1 -> cv2, plus the input when `add` (shortcut with equal widths)."""
    h = _sub(em, record, "cv2", _sub(em, record, "cv1", x, key, scope), key, scope)
    if record.get("add"):
        if h.shape != x.shape:
            raise ModelError(f"The checkpoint's Bottleneck at {key} adds tensors of different shapes; it is malformed.")
        return binary(em, "Add", x, h, f"{scope}/Add")
    return h


def c2f(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """C2f / C3k2: cv1 -> split in two halves -> each inner block on the last part -> concat all -> cv2."""
    hidden = _hidden(record, key)
    y = _sub(em, record, "cv1", x, key, scope)
    if y.shape[1] != 2 * hidden:
        raise ModelError(f"The checkpoint's {record.type_name} at {key} has cv1 width {y.shape[1]}, not 2 x {hidden}.")
    parts = split(em, y, [hidden, hidden], 1, f"{scope}/Split")
    inner = child(record, "m", key)
    for name, module in ordered_children(inner):
        parts.append(lower_block(em, module, parts[-1], f"{key}.m.{name}", f"{scope}/m/m.{name}"))
    return _sub(em, record, "cv2", concat(em, parts, f"{scope}/Concat"), key, scope)


def c3(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """C3 / C3k: cv3(concat(m(cv1(x)), cv2(x)))."""
    a = _sub(em, record, "m", _sub(em, record, "cv1", x, key, scope), key, scope)
    b = _sub(em, record, "cv2", x, key, scope)
    return _sub(em, record, "cv3", concat(em, [a, b], f"{scope}/Concat"), key, scope)


def sppf(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """SPPF: cv1 -> n chained max-pools -> concat of all -> cv2, plus the input when `add` (YOLO26)."""
    pool = child(record, "m", key)
    count = record.get("n", 3)
    if not isinstance(count, int) or count < 1:
        raise ModelError(f"The checkpoint's SPPF at {key} has n={count!r}; it is malformed.")
    pooled = [_sub(em, record, "cv1", x, key, scope)]
    for index in range(count):
        pooled.append(maxpool2d(em, pooled[-1], pool, f"{key}.m", f"{scope}/m" + (f"_{index}" if index else "")))
    y = _sub(em, record, "cv2", concat(em, pooled, f"{scope}/Concat"), key, scope)
    if record.get("add"):
        return binary(em, "Add", y, x, f"{scope}/Add")
    return y


def spp(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """SPP: cv1 -> parallel max-pools of several sizes -> concat with the input -> cv2."""
    y = _sub(em, record, "cv1", x, key, scope)
    pools = [
        maxpool2d(em, y, module, f"{key}.m.{name}", f"{scope}/m.{name}")
        for name, module in ordered_children(child(record, "m", key))
    ]
    return _sub(em, record, "cv2", concat(em, [y, *pools], f"{scope}/Concat"), key, scope)


# -- attention (YOLO11 / YOLO26) ----------------------------------------------------------------------


def c2psa(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """C2PSA: cv1 -> split (a, b) -> PSABlocks on b -> concat (a, b) -> cv2."""
    hidden = _hidden(record, key)
    a, b = split(em, _sub(em, record, "cv1", x, key, scope), [hidden, hidden], 1, f"{scope}/Split")
    b = _sub(em, record, "m", b, key, scope)
    return _sub(em, record, "cv2", concat(em, [a, b], f"{scope}/Concat"), key, scope)


def psa_block(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """PSABlock: x + attn(x), then x + ffn(x) (without the residuals when `add` is false)."""
    residual = bool(record.get("add", True))
    y = _sub(em, record, "attn", x, key, scope)
    x = binary(em, "Add", x, y, f"{scope}/Add") if residual else y
    y = _sub(em, record, "ffn", x, key, scope)
    return binary(em, "Add", x, y, f"{scope}/Add") if residual else y


def attention(em: Emitter, record: ModuleRecord, x: Value, key: str, scope: str) -> Value:
    """Multi-head self-attention over the H*W positions, plus a depthwise positional conv on v, then proj."""
    n, channels, height, width = x.shape
    positions = height * width
    heads, key_dim, head_dim = (record.get(name) for name in ("num_heads", "key_dim", "head_dim"))
    scale = record.get("scale")
    if not all(isinstance(v, int) and v > 0 for v in (heads, key_dim, head_dim)) or not isinstance(scale, float):
        raise ModelError(
            f"The checkpoint's Attention at {key} lacks num_heads/key_dim/head_dim/scale; it is malformed."
        )
    if heads * head_dim != channels:
        raise ModelError(f"The checkpoint's Attention at {key} has {heads} x {head_dim} channels for {channels}.")
    qkv = _sub(em, record, "qkv", x, key, scope)
    per_head = 2 * key_dim + head_dim
    if qkv.shape[1] != heads * per_head:
        raise ModelError(f"The checkpoint's Attention at {key} has a qkv width {qkv.shape[1]} that does not split.")
    grouped = reshape(em, qkv, [n, heads, per_head, positions], f"{scope}/Reshape")
    q, k, v = split(em, grouped, [key_dim, key_dim, head_dim], 2, f"{scope}/Split")
    q_t = em.op("Transpose", f"{scope}/Transpose", [q], (n, heads, positions, key_dim), {"perm": [0, 1, 3, 2]})
    logits = em.op("MatMul", f"{scope}/MatMul", [q_t, k], (n, heads, positions, positions))
    logits = binary(em, "Mul", logits, em.scalar(f"{scope}/scale", scale), f"{scope}/Mul")
    weights = em.op("Softmax", f"{scope}/Softmax", [logits], logits.shape, {"axis": -1})
    weights_t = em.op("Transpose", f"{scope}/Transpose", [weights], weights.shape, {"perm": [0, 1, 3, 2]})
    mixed = em.op("MatMul", f"{scope}/MatMul", [v, weights_t], (n, heads, head_dim, positions))
    mixed = reshape(em, mixed, [n, channels, height, width], f"{scope}/Reshape")
    v_map = reshape(em, v, [n, channels, height, width], f"{scope}/Reshape")
    positional = _sub(em, record, "pe", v_map, key, scope)
    return _sub(em, record, "proj", binary(em, "Add", mixed, positional, f"{scope}/Add"), key, scope)


def _hidden(record: ModuleRecord, key: str) -> int:
    hidden = record.get("c")
    if not isinstance(hidden, int) or hidden < 1:
        raise ModelError(f"The checkpoint's {record.type_name} at {key} has no hidden width 'c'; it is malformed.")
    return hidden


BLOCKS: dict[str, Handler] = {
    "Conv": conv,
    "DWConv": conv,
    "Conv2d": plain_conv2d,
    "ConvTranspose2d": transposed_conv2d,
    "Sequential": sequential,
    "ModuleList": sequential,
    "Identity": identity,
    "MaxPool2d": maxpool,
    "Upsample": nearest_upsample,
    "Bottleneck": bottleneck,
    "C2f": c2f,
    "C3k2": c2f,
    "C3": c3,
    "C3k": c3,
    "SPPF": sppf,
    "SPP": spp,
    "C2PSA": c2psa,
    "PSABlock": psa_block,
    "Attention": attention,
}
