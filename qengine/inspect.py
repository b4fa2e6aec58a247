"""A model summary for people (`qengine inspect`) and for programs (`--json`)."""

from __future__ import annotations

from collections import Counter

from . import lowbit
from .ir import Model, Tensor


def describe(model: Model, file_size: int | None = None) -> dict:
    main = model.main
    return {
        "file_bytes": file_size,
        "description": model.description,
        "inputs": [_tensor(t) for t in main.inputs],
        "outputs": [_tensor(t) for t in main.outputs],
        "ops": _op_histogram(model),
        "constant_bytes_by_dtype": _bytes_by_dtype(model),
        "weights": _weights(model),
        "subgraphs": [{"name": s.name, "ops": len(s.operators), "tensors": len(s.all_tensors()),
                       "inputs": len(s.inputs), "outputs": len(s.outputs)}
                      for s in model.subgraphs],
        "signatures": [{"key": sig.key, "subgraph": model.subgraphs.index(sig.subgraph),
                        "inputs": {k: t.name for k, t in sig.inputs.items()},
                        "outputs": {k: t.name for k, t in sig.outputs.items()}}
                       for sig in model.signatures],
        "metadata": {name: _metadata_text(name, buf.data) for name, buf in model.metadata.items()},
    }


def _tensor(t: Tensor) -> dict:
    entry = {"name": t.name, "shape": list(t.shape_signature or t.shape), "dtype": t.dtype}
    q = t.quantization
    if q is not None and q.scale.size:
        if q.scale.size == 1:
            entry["scale"], entry["zero_point"] = float(q.scale[0]), int(q.zero_point[0])
        else:
            entry["scales"], entry["axis"] = len(q.scale), q.axis
    return entry


def _weights(model: Model) -> list[dict]:
    """Every quantized constant an op reads: bit width, granularity and block size."""
    rows, seen = [], set()
    for s in model.subgraphs:
        for op in s.operators:
            for t in op.inputs:
                if t is None or id(t) in seen or not t.is_constant or t.quantization is None:
                    continue
                seen.add(id(t))
                rows.append({"name": t.name, "op": op.opcode.display, "shape": list(t.shape),
                             "dtype": t.dtype, "bits": _bits(t.dtype), "bytes": len(t.buffer),
                             **_granularity(t)})
    return rows


def _bits(dtype: str) -> int | None:
    if lowbit.is_packed(dtype):
        return lowbit.BITS[dtype]
    return {"int8": 8, "uint8": 8, "int16": 16, "int32": 32, "int64": 64}.get(dtype)


def _granularity(t: Tensor) -> dict:
    q = t.quantization
    if q.blockwise is not None:
        return {"granularity": "blockwise", "block_size": q.blockwise.block_size}
    if q.scale.size > 1:
        return {"granularity": "per-channel", "axis": q.axis}
    return {"granularity": "per-tensor"}


def _op_histogram(model: Model) -> list[dict]:
    counts = Counter((op.opcode.display, op.opcode.version)
                     for s in model.subgraphs for op in s.operators)
    return [{"op": name, "version": version, "count": n}
            for (name, version), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _bytes_by_dtype(model: Model) -> dict[str, int]:
    seen, sizes = set(), Counter()
    for s in model.subgraphs:
        for t in s.all_tensors():
            if t.is_constant and id(t.buffer) not in seen:
                seen.add(id(t.buffer))
                sizes[t.dtype] += len(t.buffer)
    return dict(sizes.most_common())


def _metadata_text(name: str, data: bytes) -> str:
    text = bytes(data).rstrip(b"\0")
    if name == "min_runtime_version" or (text.isascii() and text.decode().isprintable()):
        return text.decode("ascii", errors="replace")
    return f"<{len(data)} bytes>"


def format_text(info: dict) -> str:
    lines = []
    if info["file_bytes"] is not None:
        lines.append(f"file: {info['file_bytes']:,} bytes")
    for role in ("inputs", "outputs"):
        lines.append(f"{role}:")
        for t in info[role]:
            shape = "(" + ", ".join("None" if d == -1 else str(d) for d in t["shape"]) + ")"
            quant = ""
            if "scale" in t:
                quant = f"  scale {t['scale']:.6g} zero_point {t['zero_point']}"
            elif "scales" in t:
                quant = f"  {t['scales']} scales on axis {t['axis']}"
            lines.append(f"  {t['name']}  {shape} {t['dtype']}{quant}")
    lines.append("ops:")
    for op in info["ops"]:
        lines.append(f"  {op['count']:>4} x {op['op']} (v{op['version']})")
    lines.append("constants by dtype:")
    for dtype, size in info["constant_bytes_by_dtype"].items():
        lines.append(f"  {dtype:<10}{size:>14,} bytes")
    if info["weights"]:
        lines.append("quantized weights:")
        for w in info["weights"]:
            detail = {"blockwise": f"blockwise, block size {w.get('block_size')}",
                      "per-channel": f"per-channel (axis {w.get('axis')})"}.get(
                w["granularity"], w["granularity"])
            lines.append(f"  {w['name']}  {tuple(w['shape'])} {w['dtype']}, {detail}, "
                         f"{w['bytes']:,} bytes  ({w['op']})")
    lines.append("subgraphs:")
    for i, s in enumerate(info["subgraphs"]):
        lines.append(f"  {i}: {s['name'] or '(unnamed)'}  {s['ops']} ops, {s['tensors']} tensors")
    if info["signatures"]:
        lines.append("signatures:")
        for sig in info["signatures"]:
            lines.append(f"  {sig['key']}: inputs {list(sig['inputs'])} -> "
                         f"outputs {list(sig['outputs'])}")
    if info["metadata"]:
        lines.append("metadata:")
        for name, text in info["metadata"].items():
            lines.append(f"  {name}: {text}")
    return "\n".join(lines)
