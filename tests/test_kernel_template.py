"""Kernels forked from a kernel template (autograde/forkserver.py, autograde/templates.py):
what the student's code can observe is what a freshly started kernel shows, no state passes
from one kernel to the next, the template never serves a kernel it cannot start faithfully,
and the launcher then starts the kernel the usual way. The sandbox tests (test_sandbox.py)
run their kernel cases both ways too."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from autograde import forkserver, sandbox, templates
from autograde.limits import Limits
from autograde.runner import execute_notebook
from autograde.templates import TemplateSpec, notebook_imports

ISOLATION, WHY_NOT = sandbox.availability()
isolated = pytest.mark.skipif(not ISOLATION, reason=f"isolation unavailable here: {WHY_NOT}")
WITH_NUMPY = TemplateSpec(modules=("numpy",), knob_keys=("COURSE_KNOB",))

OBSERVE = """
import json, os, resource, socket, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
run_dir = os.environ["AUTOGRADE_RUN_DIR"]
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cwd": os.getcwd() == run_dir,
    "caps": {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")},
    "env": {k: v.replace(run_dir, "RUN") for k, v in os.environ.items() if k not in ("JPY_SESSION_NAME",)},
    "argv": [a.replace(run_dir, "RUN") for a in sys.argv], "flags": list(sys.flags),
    "path": [p.replace(run_dir, "RUN") for p in sys.path if p],
    "rlimits": [resource.getrlimit(r) for r in (resource.RLIMIT_CORE, resource.RLIMIT_CPU,
                                                 resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC)],
    "hostname": socket.gethostname(), "umask": os.umask(0o022),
    "cgroup": open("/proc/self/cgroup").read(), "session_leader": os.getsid(0) == os.getpid(),
    "stdio": [os.path.exists(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)],
    "home_files": sorted(os.listdir(os.path.expanduser("~")))[:5] == sorted(os.listdir(run_dir))[:5],
}))
"""


def run(code: list[str], template: TemplateSpec | None, extra_env: dict | None = None, cell_timeout: float = 60):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in code])
    result = execute_notebook(notebook, limits=Limits(sandbox=True, memory_mb=2000), template=template,
                              extra_env=extra_env, cell_timeout=cell_timeout)
    outputs = ["".join(o.get("text", "") or f"{o.get('ename')}: {o.get('evalue')}" for o in cell.outputs)
               for cell in result.notebook.cells]
    return result, outputs


@isolated
def test_a_template_kernel_shows_what_a_fresh_kernel_shows():
    fresh, (fresh_view,) = run([OBSERVE], None, {"COURSE_KNOB": "fresh"})
    forked, (forked_view,) = run([OBSERVE], WITH_NUMPY, {"COURSE_KNOB": "forked"})
    assert (fresh.kernel_from, forked.kernel_from) == ("exec", "template"), forked.template_note
    fresh_view, forked_view = json.loads(fresh_view), json.loads(forked_view)
    assert forked_view["env"].pop("COURSE_KNOB") == "forked" and fresh_view["env"].pop("COURSE_KNOB") == "fresh"
    assert fresh_view.pop("uid") in sandbox.UID_POOL and forked_view.pop("uid") in sandbox.UID_POOL
    assert fresh_view.pop("gid") in sandbox.UID_POOL and forked_view.pop("gid") in sandbox.UID_POOL
    assert forked_view == fresh_view
    assert forked_view["caps"]["CapEff"] == "0000000000000000" and forked_view["caps"]["NoNewPrivs"] == "1"


@isolated
def test_nothing_passes_from_one_template_kernel_to_the_next(tmp_path):
    leave = """
    import numpy, os
    numpy.left_by_first = True
    for folder in ("/tmp", "/dev/shm", "/var/tmp", os.path.expanduser("~")):
        open(os.path.join(folder, "left-by-first"), "w").write("x")
    print(numpy.random.randint(0, 2**31), os.getpid())
    """
    look = """
    import numpy, os
    print(hasattr(numpy, "left_by_first"),
          [f for f in ("/tmp", "/dev/shm", "/var/tmp") if os.path.exists(os.path.join(f, "left-by-first"))])
    print(numpy.random.randint(0, 2**31))
    """
    first, (draw_first,) = run([leave], WITH_NUMPY)
    second, (found, draw_second) = run([look, "print(__import__('numpy').random.randint(0, 2**31))"], WITH_NUMPY)
    assert first.kernel_from == second.kernel_from == "template"
    assert found.splitlines()[0] == "False []"
    # numpy's global generator was seeded in the template: each kernel reseeds it.
    assert draw_first.split()[0] != found.splitlines()[1]


@isolated
def test_a_template_kernel_cannot_reach_its_template():
    result, (seen,) = run(["""
    import glob, os
    print(sorted(glob.glob("/tmp/autograde-template-*")), [p for p in os.listdir("/proc") if p.isdigit()])
    """], WITH_NUMPY)
    assert result.kernel_from == "template"
    assert seen.strip() == "[] ['1', '2', '3']"  # no socket folder; bwrap's init, the holder, itself
    folders = [t.folder for t in templates._templates.values()]
    assert folders and all(f.stat().st_mode & 0o077 == 0 and f.stat().st_uid == 0 for f in folders)


@isolated
def test_interrupt_and_cell_timeout_reach_a_template_kernel():
    result, outputs = run(["import time; time.sleep(60)", "print('after')"], WITH_NUMPY, cell_timeout=3)
    assert result.kernel_from == "template"
    assert result.status == "timeout" and "KeyboardInterrupt" in outputs[0] and outputs[1].strip() == "after"


@isolated
def test_the_launcher_starts_the_kernel_itself_when_the_template_cannot(monkeypatch):
    monkeypatch.setattr(templates, "socket_for", lambda env, spec: "/nonexistent/autograde-template.sock")
    result, (out,) = run(["print(6 * 7)"], WITH_NUMPY)
    assert result.status == "completed" and out.strip() == "42"
    assert result.kernel_from == "exec" and "did not answer" in result.template_note


def test_the_template_refuses_what_it_cannot_start_faithfully():
    base = {"PATH": "/usr/bin", "HOME": "/x"}
    good = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "c.json"], "env": {**base, "HOME": "/y"}}
    assert forkserver.refusal(good, base, {"HOME"}, sys.executable, python_threads=1) is None
    assert "differs in PATH" in forkserver.refusal({**good, "env": {**base, "PATH": "/evil"}}, base, {"HOME"},
                                                   sys.executable)
    assert "differs in EXTRA" in forkserver.refusal({**good, "env": {**base, "EXTRA": "1"}}, base, {"HOME"},
                                                    sys.executable)
    assert "not a program" in forkserver.refusal({**good, "argv": [sys.executable, "-c", "evil"]}, base,
                                                 {"HOME"}, sys.executable)
    # A probe template runs only scripts of its folder, with -I: never a kernel, never `python -c`.
    assert forkserver.program([sys.executable, "-I", __file__], str(Path(__file__).parent)) is None  # not -I here
    assert "interpreter" in forkserver.refusal({**good, "argv": ["/bin/sh", *good["argv"][1:]]}, base, {"HOME"},
                                               sys.executable)
    assert "thread" in forkserver.refusal(good, base, {"HOME"}, sys.executable, python_threads=2)


def test_a_module_that_keeps_a_per_run_value_is_reported(tmp_path):
    (tmp_path / "keeps_home.py").write_text("import os\nCONFIG = {'dir': os.path.expanduser('~/.cfg')}\n")
    (tmp_path / "reads_late.py").write_text("import os\ndef config():\n    return os.path.expanduser('~')\n")
    code = (f"import os, sys; sys.path[:0] = [{str(tmp_path)!r}, {str(Path(forkserver.__file__).parent)!r}]\n"
            "os.environ['HOME'] = '/MARKER-abc/HOME'\n"
            "import forkserver\n"
            "added = forkserver.preload(['keeps_home', 'reads_late', 'no_such_module'])\n"
            "print(sorted(added), [m for m in forkserver.tainted_modules('MARKER-abc') if not m.startswith('_')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['keeps_home', 'reads_late'] ['keeps_home']"


def test_modules_that_keep_per_run_values_are_left_out(monkeypatch):
    launched: list[list[str]] = []

    class Fake:
        preloaded = dropped = ()

        def close(self):
            pass

    def launch(base, spec, modules):
        launched.append(list(modules))
        tainted = ["hub.constants"] if "hub_user" in modules else []
        return Fake(), {"preloaded": {m: ["hub.constants"] if m == "hub_user" else [] for m in modules},
                        "tainted": tainted, "python_threads": 1}

    monkeypatch.setattr(templates, "_launch", launch)
    template = templates._start({}, TemplateSpec(modules=("numpy", "hub_user")))
    assert launched[1] == [*templates.KERNEL_MODULES, "numpy"] and template.dropped == ("hub_user",)


def test_notebook_imports_lists_third_party_modules_in_order(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os, json\nimport numpy as np\nfrom sklearn.pipeline import make_pipeline"),
        nbformat.v4.new_markdown_cell("import pandas"),
        nbformat.v4.new_code_cell("%%writefile app.py\nimport streamlit as st\nfrom . import sibling\n"
                                  "from __future__ import annotations\nimport numpy, torch"),
    ])
    path = tmp_path / "n.ipynb"
    nbformat.write(notebook, path)
    assert notebook_imports([path, tmp_path / "missing.ipynb"]) == ("numpy", "sklearn.pipeline", "streamlit", "torch")



def test_a_probe_template_runs_only_the_scripts_of_its_folder(tmp_path):
    scripts, elsewhere = tmp_path / "probes", tmp_path / "elsewhere"
    scripts.mkdir()
    elsewhere.mkdir()
    for folder in (scripts, elsewhere):
        (folder / "probe.py").write_text("print('probe')\n")
    code = (f"import sys; sys.path.insert(0, {str(Path(forkserver.__file__).parent)!r}); import forkserver\n"
            f"exe, folder = sys.executable, {str(scripts)!r}\n"
            f"print([forkserver.program(argv, folder) for argv in ([exe, '-I', folder + '/probe.py'],"
            f" [exe, '-I', {str(elsewhere / 'probe.py')!r}], [exe, '-I', folder + '/../elsewhere/probe.py'],"
            f" [exe, folder + '/probe.py'], [exe, '-m', 'ipykernel_launcher', '-f', 'c.json'])])")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([str(scripts / "probe.py"), None, None, None, None])
