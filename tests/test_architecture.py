"""The layering and "one place per op, one place per formula" rules, checked on the source.

Everything here parses files with `ast`; nothing is imported but the op registry (for the list
of op types the runtime supports). `python tests/test_architecture.py` prints the figures.

- no import cycle among `qengine/` modules (module-level and function-level imports alike);
- every op type the runtime supports is named, as a string literal, in at most 3 files under
  `qengine/`, median 1;
- a `round(x / scale)` quantize expression appears in at most 2 files of `qengine/` + `kernels/`;
- `qengine/ops/` imports nothing from `qengine.quantizer`, `qengine.compare` or the CLI;
- `kernels/` and `schema/` import nothing from `qengine` but `qengine.kernels`.
"""

from __future__ import annotations

import ast
import statistics
from collections import defaultdict
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the installed package maps these directories to these dotted names (pyproject.toml)
PACKAGES = {"qengine": ROOT / "qengine", "qengine.kernels": ROOT / "kernels",
            "qengine.schema": ROOT / "schema"}
MAX_FILES_PER_OP, MEDIAN_FILES_PER_OP = 3, 1
MAX_QUANTIZE_EXPRESSION_FILES = 2


# -- the module graph ---------------------------------------------------------------------------

@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the three packages."""
    found = {}
    for package, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str) -> str | None:
    """The innermost module of ours that `name` (a dotted import target) refers to."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


@cache
def imports(module: str) -> frozenset[str]:
    """Our modules that `module` imports anywhere in its body (functions included)."""
    found = set()
    for node in ast.walk(parse(modules()[module])):
        if isinstance(node, ast.Import):
            found.update(_known(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                found.add(_known(f"{target}.{alias.name}") or _known(target))
    found.discard(None)
    found.discard(module)
    return frozenset(found)


def import_cycles() -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    graph = {m: sorted(imports(m)) for m in modules() if m.startswith("qengine")}
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


# -- op names and quantize expressions ----------------------------------------------------------

def _files(*packages: str) -> list[Path]:
    return sorted(p for m, p in modules().items() if m.split(".")[:2] != ["qengine", "schema"]
                  and any(m == pkg or m.startswith(pkg + ".") for pkg in packages))


def _string_literals(path: Path) -> set[str]:
    return {node.value for node in ast.walk(parse(path))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def supported_op_types() -> list[str]:
    from qengine.runtime import supported_ops

    return supported_ops()


def files_naming_each_op() -> dict[str, list[str]]:
    """Op type -> the files under qengine/ that name it as a string literal."""
    qengine_files = [p for p in _files("qengine") if ROOT / "qengine" in p.parents]
    literals = {p: _string_literals(p) for p in qengine_files}
    return {op: [str(p.relative_to(ROOT)) for p in qengine_files if op in literals[p]]
            for op in supported_op_types()}


_ROUNDERS = {"round", "rint", "around"}  # and round_half_away & co.


def _callee(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _is_quantize_expression(node: ast.AST) -> bool:
    """round(x / s), np.rint(x / s + zp), round_half_away(np.divide(x, s)), ...: a rounding
    call whose argument divides (the real -> quantized conversion written out)."""
    if not (isinstance(node, ast.Call) and node.args and (
            _callee(node) in _ROUNDERS or _callee(node).startswith("round"))):
        return False
    for sub in ast.walk(node.args[0]):
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Div):
            return True
        if isinstance(sub, ast.Call) and _callee(sub) in {"divide", "true_divide"}:
            return True
    return False


def files_with_quantize_expression() -> list[str]:
    return [str(p.relative_to(ROOT)) for p in _files("qengine", "qengine.kernels")
            if any(_is_quantize_expression(n) for n in ast.walk(parse(p)))]


# -- layering -----------------------------------------------------------------------------------

def _imports_under(package: str) -> dict[str, frozenset[str]]:
    return {m: imports(m) for m in modules() if m == package or m.startswith(package + ".")}


def forbidden_imports(package: str, forbidden) -> list[str]:
    return [f"{m} imports {target}" for m, targets in sorted(_imports_under(package).items())
            for target in sorted(targets) if forbidden(target)]


def _within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def ops_forbidden(target: str) -> bool:
    return _within(target, "qengine.quantizer", "qengine.compare", "qengine.bench") \
        or target.startswith("qengine.cli")


def low_layer_forbidden(target: str) -> bool:
    return not _within(target, "qengine.kernels", "qengine.schema")


# -- the tests ----------------------------------------------------------------------------------

def test_no_import_cycles():
    assert import_cycles() == []


def test_each_op_type_is_named_in_few_files():
    counts = {op: len(files) for op, files in files_naming_each_op().items()}
    worst = {op: files for op, files in files_naming_each_op().items()
             if len(files) > MAX_FILES_PER_OP}
    assert not worst, f"op types named in more than {MAX_FILES_PER_OP} files: {worst}"
    assert statistics.median(counts.values()) <= MEDIAN_FILES_PER_OP


def test_quantize_expression_is_written_once():
    files = files_with_quantize_expression()
    assert len(files) <= MAX_QUANTIZE_EXPRESSION_FILES, files


def test_ops_do_not_import_the_quantizer_compare_or_cli():
    assert forbidden_imports("qengine.ops", ops_forbidden) == []


def test_kernels_and_schema_do_not_import_qengine():
    assert forbidden_imports("qengine.kernels", low_layer_forbidden) == []
    assert forbidden_imports("qengine.schema", low_layer_forbidden) == []


def test_the_checker_sees_a_cycle_and_a_quantize_expression():
    """The checks above must be able to fail: feed them code that breaks each rule."""
    assert _is_quantize_expression(ast.parse("np.round(x / scale) + zp").body[0].value.left)
    assert not _is_quantize_expression(ast.parse("np.round(x * scale)").body[0].value)
    assert imports("qengine.runtime.registry")  # the graph is not empty
    assert "qengine.ir" in imports("qengine.flatbuffer_io")


def report() -> str:
    per_op = files_naming_each_op()
    counts = sorted(len(f) for f in per_op.values())
    histogram = defaultdict(int)
    for n in counts:
        histogram[n] += 1
    lines = [f"import cycles: {len(import_cycles())} {import_cycles()}",
             (f"op types: {len(counts)}; files naming one: max {max(counts)}, median "
             f"{statistics.median(counts)}, histogram {dict(sorted(histogram.items()))}"),
             f"worst: {sorted(per_op.items(), key=lambda kv: -len(kv[1]))[:5]}",
             f"quantize-expression files: {files_with_quantize_expression()}",
             f"ops/ forbidden imports: {forbidden_imports('qengine.ops', ops_forbidden)}",
             (f"kernels/ schema/ forbidden imports: "
             f"{forbidden_imports('qengine.kernels', low_layer_forbidden)}"
             f"{forbidden_imports('qengine.schema', low_layer_forbidden)}")]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
