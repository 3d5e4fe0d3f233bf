"""Flags for the instructor: what a submission did to the grading, found three ways.

None of this decides a checkpoint judged outside the kernel (``autograde.collect``): those
scores come from data the grader collected and judged itself. The receipts below only guard
plain nbgrader test cells, which run in the kernel (reported as ``judged=in-kernel``).

1. **Static scan** (in the grader, before anything runs): the student-authored cells are
   parsed and every mechanism that could fake a check is flagged: monkeypatching library
   attributes, IPython hooks, exception hooks, changed builtins, fake modules, importing the
   hidden verifiers, dynamic code, and paths of grader files. Nothing the kernel does can
   change this verdict.
2. **Check receipts**: each graded test cell is wrapped so that, only when its body finishes
   without an exception, it prints a receipt carrying a per-run random nonce. A graded cell
   counts as passed only with its receipt in its own output. A cell turned into ``pass`` by an
   input transformer, an exception swallowed by a custom handler, or a muted traceback leaves
   no receipt and scores zero.
3. **Runtime audit**: a guard cell injected before the first student cell snapshots builtins
   and hooks and installs an audit hook (irremovable) that records attempts to open grader
   files; an audit cell after the last one reports what changed. A missing audit is itself a
   flag.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import secrets
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nbformat is imported where used: the scanning child process needs none of it
    from nbformat import NotebookNode

INJECTED = "autograde_injected"  # cell metadata key of the cells this module adds
RECEIPT = "[autograde-receipt {nonce} {grade_id}]"
AUDIT_PREFIX = "[autograde-audit {nonce}]"

# Modules whose functions the checks rely on; rebinding their attributes is flagged.
WATCHED_MODULES = {
    "numpy", "np", "math", "json", "os", "sys", "subprocess", "socket", "http", "urllib", "requests",
    "httpx", "builtins", "importlib", "pickle", "joblib", "hashlib", "sklearn", "pandas", "pd",
    "fastapi", "pydantic", "starlette", "uvicorn", "streamlit", "st", "sentence_transformers",
    "transformers", "torch", "checkpoints", "IPython", "gradio", "time", "random", "io", "re",
}
IPYTHON_HOOKS = {
    "input_transformers_cleanup", "input_transformers_post", "ast_transformers", "set_custom_exc",
    "showtraceback", "showsyntaxerror", "run_cell", "run_cell_async", "run_ast_nodes", "run_code",
    "custom_exceptions", "register_magic_function", "events", "input_splitter", "_showtraceback",
}
SYS_HOOKS = {"excepthook", "displayhook", "settrace", "setprofile", "meta_path", "path_hooks", "modules",
             "stdout", "stderr", "addaudithook", "audit"}
DYNAMIC_CALLS = {"exec", "eval", "compile", "__import__"}
GRADER_PATH_HINTS = re.compile(r"(notebooks/|gradebook|\.nbgrader|/checkpoints|checkpoints/|autograde|"
                               r"results/|submissions/|/source/|/release/)", re.IGNORECASE)


# --------------------------------------------------------------------------- static scan

@functools.lru_cache(maxsize=1)
def _transformer_manager():
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


class _NeedsFullTransform(Exception):
    """The cell is too unusual for the per-line shortcut; use IPython's whole-cell path."""


def _python_source(cell_source: str) -> str:
    """IPython syntax (magics, shell escapes) turned into plain Python, as IPython would."""
    try:
        return _transform_by_logical_line(cell_source)
    except _NeedsFullTransform:
        pass
    except Exception:
        return cell_source
    try:
        return _transformer_manager().transform_cell(cell_source)
    except Exception:
        return cell_source


def _bracket_levels(tokens, start: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """(Python's tokenizer level, IPython's grouping level) of open brackets after ``tokens``;
    the first may go negative, the second stops at zero, as in ``make_tokens_by_line``."""
    import tokenize

    raw, grouping = start
    for token in tokens:
        if token.type == tokenize.OP and token.string in "([{":
            raw += 1
            grouping += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            raw -= 1
            grouping = max(grouping - 1, 0)
    return raw, grouping


def _transform_by_logical_line(cell_source: str) -> str:
    """``TransformerManager.transform_cell``, without its quadratic cost.

    IPython re-tokenizes the whole cell after every piece of IPython syntax it rewrites, so a
    cell of n lines with m magics costs m x n (a 20,000-line cell with 100 magics: half a
    minute). Its token transforms only rewrite the logical line they were found in, so here
    the cell is tokenized once and only the logical lines holding IPython syntax are
    transformed, each on its own. Whenever that equivalence is not certain (the cell does
    not tokenize to its end, a bracket is open at the line's edges, the line tokenizes
    differently on its own, or its rewrite leaves something open) this raises
    ``_NeedsFullTransform`` and the caller takes IPython's whole-cell path."""
    import tokenize

    from IPython.core.inputtransformer2 import make_tokens_by_line

    manager = _transformer_manager()
    cell = cell_source if cell_source.endswith("\n") else cell_source + "\n"
    lines = cell.splitlines(keepends=True)
    for transform in manager.cleanup_transforms + manager.line_transforms:
        lines = transform(lines)
    if not lines:
        return ""
    groups = make_tokens_by_line(lines)
    if not groups or groups[-1][-1].type != tokenize.ENDMARKER:
        raise _NeedsFullTransform  # tokenizing stopped early (an open string or bracket)
    layout = {tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    out: list[str] = []
    next_row = 0  # 0-based index of the first line not copied yet
    levels = (0, 0)
    for group in groups:
        levels_before, levels = levels, _bracket_levels(group, levels)
        if not any(cls.find([group]) for cls in manager.token_transformers):
            continue
        first, last = group[0].start[0] - 1, group[-1].end[0] - 1
        if levels_before != (0, 0) or levels != (0, 0) or first < next_row or last >= len(lines):
            raise _NeedsFullTransform
        chunk = lines[first:last + 1]
        alone = [t for g in make_tokens_by_line(chunk) for t in g if t.type not in layout]
        if [(t.type, t.string) for t in alone] != [(t.type, t.string) for t in group if t.type not in layout]:
            raise _NeedsFullTransform
        rewritten = manager.do_token_transforms(chunk)
        if rewritten:
            check = [t for g in make_tokens_by_line(rewritten) for t in g]
            if (not rewritten[-1].endswith("\n") or not check or check[-1].type != tokenize.ENDMARKER
                    or _bracket_levels(check) != (0, 0)):
                raise _NeedsFullTransform  # the rewrite left a string or bracket open
        out += lines[next_row:first]
        out += rewritten
        next_row = last + 1
    out += lines[next_row:]
    return "".join(out)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.value if not isinstance(node, ast.Call) else node.func
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif isinstance(node, ast.Call):
        parts.append(_dotted(node.func) + "()")
    return ".".join(reversed(parts))


class _Scanner(ast.NodeVisitor):
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.module_aliases: dict[str, str] = {}

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            top = alias.name.split(".")[0]
            self.module_aliases[alias.asname or top] = top
            if top == "checkpoints":
                self.flags.add("imports-verifiers")
            if top in {"ctypes", "gc", "inspect"} :
                self.flags.add(f"introspection:{top}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        top = (node.module or "").split(".")[0]
        for alias in node.names:
            self.module_aliases.setdefault(alias.asname or alias.name, top)
        if top == "checkpoints":
            self.flags.add("imports-verifiers")
        if top in {"ctypes", "gc"}:
            self.flags.add(f"introspection:{top}")

    def _assigned(self, target: ast.AST) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._assigned(element)
            return
        if isinstance(target, ast.Name) and target.id in {"__builtins__", "print", "AssertionError", "Exception"}:
            self.flags.add(f"changed-builtins:{target.id}")
            return
        if not isinstance(target, ast.Attribute | ast.Subscript):
            return
        dotted = _dotted(target.value if isinstance(target, ast.Subscript) else target)
        root = _root_name(target)
        module = self.module_aliases.get(root or "", root or "")
        if root in {"__builtins__", "builtins"} or module == "builtins":
            self.flags.add("changed-builtins")
        elif dotted.startswith(("sys.modules", "sys.meta_path", "sys.path_hooks")) or (
                module == "sys" and isinstance(target, ast.Subscript)):
            self.flags.add("fake-module")
        elif module == "sys" and isinstance(target, ast.Attribute) and target.attr in SYS_HOOKS:
            self.flags.add(f"sys-hook:{target.attr}")
        elif "get_ipython()" in dotted or (isinstance(target, ast.Attribute) and target.attr in IPYTHON_HOOKS):
            self.flags.add("ipython-hook")
        elif module in WATCHED_MODULES and root in self.module_aliases and isinstance(target, ast.Attribute):
            self.flags.add(f"monkeypatch:{module}.{target.attr}")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._assigned(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._assigned(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assigned(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._assigned(target)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        if name in DYNAMIC_CALLS or name.endswith("import_module") and node.args and not isinstance(
                node.args[0], ast.Constant):
            self.flags.add(f"dynamic-code:{last}")
        if last in {"setattr", "delattr"} and node.args:
            root = _root_name(node.args[0])
            module = self.module_aliases.get(root or "", root or "")
            if module in WATCHED_MODULES or root in {"__builtins__", "builtins"}:
                self.flags.add(f"monkeypatch:{module}.setattr")
        if last in {"set_custom_exc", "register", "register_transformer", "register_magic_function"} and (
                "get_ipython" in name or "events" in name or "ip." in name):
            self.flags.add("ipython-hook")
        if last in {"append", "insert", "extend"} and any(h in name for h in IPYTHON_HOOKS | {"meta_path", "path_hooks"}):
            self.flags.add("ipython-hook" if any(h in name for h in IPYTHON_HOOKS) else "fake-module")
        if name.startswith("sys.modules.") and last in {"pop", "update", "clear", "setdefault", "__setitem__",
                                                        "__delitem__", "popitem"}:
            self.flags.add("fake-module")
        if name in {"sys.settrace", "sys.setprofile", "threading.settrace", "sys.addaudithook"}:
            self.flags.add(f"sys-hook:{last}")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and GRADER_PATH_HINTS.search(node.value):
            self.flags.add("reads-grader-files")


# What ast.parse raises on hostile text besides SyntaxError: null bytes (ValueError on 3.11),
# nesting too deep for the parser or the tree (RecursionError, MemoryError).
_UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError)


def _scan_python(python_source: str) -> set[str]:
    try:
        tree = ast.parse(python_source)
    except _UNPARSABLE:
        return set()
    scanner = _Scanner()
    scanner.visit(tree)
    return scanner.flags


def scan_source(source: str) -> set[str]:
    """Flags for one cell of student code."""
    return _scan_python(_python_source(source))


def scan_sources(sources: list[str]) -> list[str]:
    """Flags for the student's code cells, given in notebook order."""
    python = [_python_source(source) for source in sources]
    # Scan the student's cells together so `import numpy as np` in one cell is known in the next.
    try:
        tree = ast.parse("\n".join(python))
    except _UNPARSABLE:
        # One cell does not parse: scan the others one by one (each transformed once only).
        flags: set[str] = set()
        for source in python:
            flags |= _scan_python(source)
        return sorted(flags)
    scanner = _Scanner()
    scanner.visit(tree)
    return sorted(scanner.flags)


def student_sources(nb: NotebookNode, is_student_cell) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code" and is_student_cell(cell)]


def scan_notebook(nb: NotebookNode, is_student_cell) -> list[str]:
    """Flags for every student-authored code cell of ``nb``; ``is_student_cell(cell)`` says
    which cells the student wrote (locked and test cells are the instructor's)."""
    return scan_sources(student_sources(nb, is_student_cell))


SCAN_TIMEOUT_FLAG = "scan-timeout"
SCAN_FAILED_FLAG = "scan-failed"
SCAN_MEMORY_BYTES = 2 * 1024**3  # address space of the scanning process


def scan_notebook_bounded(nb: NotebookNode, is_student_cell, timeout_s: float) -> tuple[list[str], float]:
    """``scan_notebook`` in a child process killed after ``timeout_s`` seconds.

    Returns (flags, seconds used). A scan that runs out of time gives ``["scan-timeout"]``,
    one that dies (out of memory, say) ``["scan-failed"]``: a submission cannot hold up its
    batch by being expensive to read. The child gets only the student's cell sources, as
    JSON on stdin, and answers the flags as JSON on stdout."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    started = time.monotonic()
    if timeout_s <= 0:
        return [SCAN_TIMEOUT_FLAG], 0.0
    payload = json.dumps({"sources": student_sources(nb, is_student_cell)}).encode("utf-8")
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    # -P: the working directory is not put on sys.path, so nothing found there is imported.
    command = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-m", "autograde.integrity",
               "--scan-stdin"]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, cwd=package_parent, start_new_session=True)
    try:
        out, _ = proc.communicate(payload, timeout=max(timeout_s - (time.monotonic() - started), 0.01))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return [SCAN_TIMEOUT_FLAG], time.monotonic() - started
    used = time.monotonic() - started
    try:
        flags = json.loads(out.decode("utf-8"))["flags"]
        if proc.returncode != 0 or not all(isinstance(f, str) for f in flags):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return [SCAN_FAILED_FLAG], used
    return list(flags), used


def _scan_stdin_main() -> int:
    """The child side of ``scan_notebook_bounded``."""
    import sys

    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (SCAN_MEMORY_BYTES, SCAN_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    sources = json.loads(sys.stdin.buffer.read().decode("utf-8"))["sources"]
    sys.stdout.write(json.dumps({"flags": scan_sources([str(s) for s in sources])}))
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------- instrumentation

def new_nonce() -> str:
    return secrets.token_hex(16)


def wrap_test_cell(source: str, grade_id: str, nonce: str) -> str:
    """The test cell's code, printing its receipt only if it finishes without an exception."""
    body = textwrap.indent(_python_source(source).rstrip() or "pass", "    ")
    receipt = RECEIPT.format(nonce=nonce, grade_id=grade_id)
    return f"try:\n{body}\nexcept BaseException:\n    raise\nelse:\n    print({receipt!r})\n"


GUARD_TEMPLATE = r'''
def __autograde_guard():
    import builtins, importlib, sys
    # Import the verifiers now, before any student code can put a look-alike in their way.
    for name in {verifiers!r}:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    ip = get_ipython()

    def hook_counts():
        callbacks = ip.events.callbacks
        return {
            "input_transformers_cleanup": len(ip.input_transformers_cleanup),
            "input_transformers_post": len(ip.input_transformers_post),
            "ast_transformers": len(ip.ast_transformers),
            "pre_run_cell": len(callbacks.get("pre_run_cell", [])),
            "post_run_cell": len(callbacks.get("post_run_cell", [])),
            "pre_execute": len(callbacks.get("pre_execute", [])),
        }

    state = {
        "builtins": {k: id(v) for k, v in vars(builtins).items()},
        "hook_counts": hook_counts,
        "hooks": hook_counts(),
        "excepthook": id(sys.excepthook),
        "shell_overrides": {name: id(vars(ip)[name]) for name in
                            ("run_cell", "run_cell_async", "showtraceback", "_showtraceback", "run_code",
                             "run_ast_nodes") if name in vars(ip)},
        "meta_path": len(sys.meta_path),
        "modules": set(sys.modules),
        "reads": [],
    }
    private = {private!r}

    def audit(event, args):
        if event in ("open", "os.listdir", "os.scandir") and args:
            path = str(args[0])
            if any(path.startswith(p) for p in private):
                state["reads"].append(path[:200])

    sys.addaudithook(audit)
    return state


__autograde_state = __autograde_guard()
del __autograde_guard
'''

AUDIT_TEMPLATE = r'''
def __autograde_audit(state, nonce):
    import builtins, json, sys, types
    ip = get_ipython()
    found = []

    def from_notebook(obj):
        code = getattr(obj, "__code__", None) or getattr(getattr(obj, "__func__", None), "__code__", None)
        filename = getattr(code, "co_filename", "") or ""
        return getattr(obj, "__module__", None) == "__main__" or "ipykernel_" in filename or filename.startswith("<ipython-input")

    # ipykernel itself rebinds input() for every request.
    changed = sorted(k for k, v in vars(builtins).items() if state["builtins"].get(k) not in (None, id(v))
                     and not k.startswith("_") and k not in ("input", "raw_input"))
    removed = sorted(k for k in state["builtins"] if k not in vars(builtins) and not k.startswith("_"))
    if changed or removed:
        found.append("changed-builtins:" + ",".join((changed + removed)[:5]))
    for name, count in state["hook_counts"]().items():
        if count > state["hooks"][name]:
            found.append("ipython-hook:" + name)
    if ip.custom_exceptions:
        found.append("ipython-hook:custom_exceptions")
    for name in ("run_cell", "run_cell_async", "showtraceback", "_showtraceback", "run_code", "run_ast_nodes"):
        if name in vars(ip) and state["shell_overrides"].get(name) != id(vars(ip)[name]):
            found.append("ipython-hook:" + name)
    if id(sys.excepthook) != state["excepthook"] and from_notebook(sys.excepthook):
        found.append("sys-hook:excepthook")
    # Libraries add import finders of their own (transformers does); only the notebook's count.
    if any(from_notebook(getattr(finder, "find_spec", None)) or type(finder).__module__ == "__main__"
           for finder in sys.meta_path):
        found.append("fake-module:meta_path")
    watched = {watched!r}
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        if top not in watched or not isinstance(module, types.ModuleType):
            if top in watched and module is not None and not isinstance(module, types.ModuleType):
                found.append("fake-module:" + name)
            continue
        patched = [attr for attr, value in list(vars(module).items())
                   if callable(value) and not attr.startswith("__") and from_notebook(value)]
        if not patched:
            continue
        # Extension modules (torch._C.*) have no spec either: a module counts as fake only
        # when it also carries functions written in the notebook.
        if getattr(module, "__spec__", None) is None and name not in state["modules"]:
            found.append("fake-module:" + name)
        found.extend("monkeypatch:" + name + "." + attr for attr in patched)
    if state["reads"]:
        found.append("reads-grader-files")
    print("{prefix} " + json.dumps(sorted(set(found))[:40]))


__autograde_audit(__autograde_state, None)
'''


def _injected(source: str, role: str) -> NotebookNode:
    import nbformat

    cell = nbformat.v4.new_code_cell(source.strip() + "\n")
    cell.metadata[INJECTED] = role
    return cell


VERIFIER_MODULE = re.compile(r"\b(checkpoints(?:\.\w+)*)\b")


def instrument(nb: NotebookNode, test_ids: set[str], nonce: str, private_paths: list[str]) -> NotebookNode:
    """Guard first, receipts on every graded test cell, audit last."""
    verifiers: set[str] = set()  # modules in-kernel test cells import (checkpoints judged outside need none)
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.cell_type == "code" and grade_id in test_ids:
            verifiers.update(VERIFIER_MODULE.findall(cell.source))
            cell.source = wrap_test_cell(cell.source, grade_id, nonce)
    guard = (GUARD_TEMPLATE.replace("{private!r}", repr(list(private_paths)))
             .replace("{verifiers!r}", repr(sorted(verifiers))))
    audit = (AUDIT_TEMPLATE.replace("{watched!r}", repr(sorted(WATCHED_MODULES)))
             .replace("{prefix}", AUDIT_PREFIX.format(nonce=nonce)))
    nb.cells.insert(0, _injected(guard, "guard"))
    nb.cells.append(_injected(audit, "audit"))
    return nb


def _stdout(cell: NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def has_receipt(cell: NotebookNode, grade_id: str, nonce: str) -> bool:
    return RECEIPT.format(nonce=nonce, grade_id=grade_id) in _stdout(cell)


def audit_flags(executed: NotebookNode, nonce: str) -> list[str]:
    """What the audit cell reported, or ``audit-missing`` when it did not report."""
    prefix = AUDIT_PREFIX.format(nonce=nonce)
    for cell in executed.cells:
        if cell.get("metadata", {}).get(INJECTED) != "audit":
            continue
        for line in _stdout(cell).splitlines():
            if line.startswith(prefix):
                try:
                    reported = json.loads(line[len(prefix):])
                except ValueError:
                    break
                # The audit runs in the student's interpreter: a report that is not a list of
                # short strings was tampered with (json.dumps replaced, say).
                if type(reported) is list and all(type(f) is str and len(f) < 120 for f in reported):
                    return reported[:40]
                return ["audit-tampered"]
    return ["audit-missing"]


def remove_instrumentation(nb: NotebookNode, nonce: str) -> NotebookNode:
    """The notebook as the student should see it in feedback: no injected cells, no receipts."""
    import nbformat

    nb = nbformat.from_dict(nb)
    nb.cells = [c for c in nb.cells if INJECTED not in c.get("metadata", {})]
    marker = f"[autograde-receipt {nonce} "
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and marker in output.get("text", ""):
                output["text"] = "".join(line for line in output["text"].splitlines(True) if marker not in line)
    return nb


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--scan-stdin"]:
        sys.exit(_scan_stdin_main())
    sys.exit("usage: python -m autograde.integrity --scan-stdin  (student cell sources as JSON on stdin)")
