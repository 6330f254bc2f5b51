#!/usr/bin/env python3
"""Set up vizattn in ./.venv and run it: one command per job.

    python3 dev.py lab  [jupyter lab args]   set up, then open JupyterLab on notebooks/00_tour.ipynb
    python3 dev.py test [pytest args]        set up, then run the test suite (notebooks included, nbval)
    python3 dev.py strip [--check] [paths]   remove outputs, execution counts and widget state
                                             from notebooks (default: notebooks/*.ipynb)
    python3 dev.py site [folder]             set up, then build the static site of the notebooks
                                             (default: site/; explorers without a kernel)

Set-up creates (or reuses) the virtual environment .venv at the repository root,
makes sure a pinned torch is in it, installs this package editable with its
[dev] extras, and the [reference] extra (timm, for the checkpoint tests) with
--no-deps. An unchanged set-up is skipped on the next call.

Environment variables:
    VIZATTN_TORCH        pip requirement for torch, pinned (default: torch==2.13.0)
    VIZATTN_TORCH_INDEX  pip --index-url for that torch install, e.g. PyTorch's own
                         CPU-only or CUDA wheel index

Standard library only; Linux, macOS and Windows; Python >= 3.10.
"""

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

MIN_PYTHON = (3, 10)
ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".vizattn-installed"
NATIVE_STAMP = VENV / ".vizattn-native"  # hash of the native kernel's sources last built
DEFAULT_TORCH = "torch==2.13.0"
TOUR = "00_tour.ipynb"  # what `lab` opens, in notebooks/
# The [reference] extra of pyproject.toml (tests/test_packaging.py keeps them equal): installed
# without its dependencies, see install_reference.
REFERENCE = ["timm>=1.0"]
# JupyterLab's saved layouts for `lab` (the bare /lab address restores the "default" one)
WORKSPACES = VENV / "lab-workspaces"
# Bump to force a re-install after a change to the set-up steps below.
SETUP_VERSION = "3"
WINDOWS = os.name == "nt"

USAGE = """\
usage: python3 dev.py lab  [jupyter lab args...]
       python3 dev.py test [pytest args...]
       python3 dev.py strip [--check] [notebook paths...]
       python3 dev.py site [folder]

  lab   set up .venv if needed, then open JupyterLab on notebooks/00_tour.ipynb
  test  set up .venv if needed, then run pytest (paths are relative to the repo root);
        the notebooks run under nbval with VIZATTN_FAST=1 (set it to 0 for full sizes)
  strip remove outputs, execution counts and widget state from notebooks (default:
        notebooks/*.ipynb); --check only lists the ones that need it (exit code 1)
  site  set up .venv if needed, then execute every notebook and build the static site into
        site/ (or folder): open site/index.html; VIZATTN_FAST=1 unless set, as in test

environment: VIZATTN_TORCH (default {default}), VIZATTN_TORCH_INDEX (pip --index-url for torch)
""".format(default=DEFAULT_TORCH)


class DevError(Exception):
    """An expected failure: reported as one message, without a traceback."""


def say(msg):
    print("dev.py: " + msg, flush=True)


def venv_python():
    if WINDOWS:
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def venv_script(name):
    if WINDOWS:
        return VENV / "Scripts" / (name + ".exe")
    return VENV / "bin" / name


def run(cmd, what, **kwargs):
    """Run a command, streaming its output; raise DevError if it fails."""
    try:
        rc = subprocess.call([str(c) for c in cmd], **kwargs)
    except OSError as exc:
        raise DevError("{} failed: {}".format(what, exc)) from None
    if rc != 0:
        raise DevError("{} failed (exit code {}); see the messages above".format(what, rc))


def probe(python, code):
    """Run python -c code; return its stripped stdout, or None if it fails."""
    try:
        out = subprocess.run(
            [str(python), "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


TORCH_PROBE = "import torch, os; print(torch.__version__ + ' from ' + os.path.dirname(torch.__file__))"


def version_tuple(v):
    parts = []
    for piece in v.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)


# --- set-up ---------------------------------------------------------------------------

def ensure_venv():
    """Create .venv, or reuse it when its python runs. Returns True if newly created."""
    py = venv_python()
    if VENV.exists():
        version = probe(py, "import sys; print('%d.%d' % sys.version_info[:2])")
        if version is not None:
            if version_tuple(version) < MIN_PYTHON:
                raise DevError(
                    ".venv runs Python {} but vizattn needs >= {}.{}; delete .venv and run "
                    "dev.py again with a newer python3".format(version, *MIN_PYTHON)
                )
            say("reusing .venv (Python {})".format(version))
            return False
        say(".venv exists but its python does not run; recreating it")

    cmd = [sys.executable, "-m", "venv", "--clear"]
    base_torch = probe(sys.executable, TORCH_PROBE)
    if base_torch:
        say("base interpreter already has torch {}; creating .venv with "
            "--system-site-packages to reuse it".format(base_torch))
        cmd.append("--system-site-packages")
    else:
        say("creating .venv (Python {}.{})".format(*sys.version_info[:2]))
    cmd.append(str(VENV))
    try:
        rc = subprocess.call(cmd)
    except OSError as exc:
        rc = exc
    if rc != 0 or not venv_python().exists():
        raise DevError(
            "could not create the virtual environment .venv with {} -m venv. On Debian/Ubuntu "
            "install the venv module first (apt-get install python3-venv), then run dev.py "
            "again".format(sys.executable)
        )
    if base_torch and sys.prefix != sys.base_prefix:
        # dev.py itself runs inside a virtual environment: --system-site-packages only
        # exposes the interpreter's base site, so also point .venv at the folder that
        # holds this torch (appended to sys.path, like the system site).
        torch_site = os.path.dirname(base_torch.split(" from ", 1)[1])
        purelib = probe(py, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        if purelib:
            Path(purelib, "_vizattn_base_torch.pth").write_text(torch_site + "\n", encoding="utf-8")
    return True


def check_torch_spec(spec):
    pinned = "==" in spec or spec.endswith(".whl") or "://" in spec
    if not pinned:
        raise DevError(
            "VIZATTN_TORCH={!r} is not pinned. Use an exact version such as {!r} (an unpinned "
            "torch pulls the newest, multi-GB build) or a path to a wheel file".format(spec, DEFAULT_TORCH)
        )


def ensure_torch():
    """Make sure torch >= 2.6 imports inside .venv; install the pinned spec if not. Returns its version."""
    py = venv_python()
    found = probe(py, TORCH_PROBE)
    if found and version_tuple(found.split()[0]) >= (2, 6):
        say("using torch " + found)
        return found.split()[0]
    if found:
        say("torch {} is older than the 2.6 vizattn needs; installing a pinned one into .venv".format(found))

    spec = os.environ.get("VIZATTN_TORCH", "").strip() or DEFAULT_TORCH
    check_torch_spec(spec)
    cmd = [py, "-m", "pip", "install", "--disable-pip-version-check", spec]
    index = os.environ.get("VIZATTN_TORCH_INDEX", "").strip()
    where = ""
    if index:
        cmd += ["--index-url", index]
        where = " from " + index
    say("installing {}{} (set VIZATTN_TORCH / VIZATTN_TORCH_INDEX to choose another build)".format(spec, where))
    run(cmd, "installing torch")
    found = probe(py, TORCH_PROBE)
    if not found:
        raise DevError("torch was installed but does not import in .venv; try: {} -c 'import torch'".format(py))
    say("using torch " + found)
    return found.split()[0]


def setup_hash():
    h = hashlib.sha256()
    h.update(SETUP_VERSION.encode())
    h.update((ROOT / "pyproject.toml").read_bytes())
    return h.hexdigest()


def ensure_setup():
    if sys.version_info[:2] < MIN_PYTHON:
        raise DevError(
            "vizattn needs Python >= {}.{}, but this is Python {}.{} ({}). Run dev.py with a "
            "newer python3".format(*(MIN_PYTHON + tuple(sys.version_info[:2]) + (sys.executable,)))
        )
    if not (ROOT / "pyproject.toml").is_file():
        raise DevError("no pyproject.toml next to dev.py in " + str(ROOT))

    created = ensure_venv()
    wanted = setup_hash()
    if not created and STAMP.is_file():
        lines = STAMP.read_text(encoding="utf-8").splitlines()
        if lines and lines[0].strip() == wanted:
            extra = " ({})".format(lines[1]) if len(lines) > 1 else ""
            say("set-up is up to date{}".format(extra))
            ensure_native()
            return

    torch_version = ensure_torch()
    if STAMP.exists():
        STAMP.unlink()
    # Constrain torch to the version just checked so that no requirement can swap it
    # for another (possibly multi-GB) build.
    constraints = VENV / ".vizattn-constraints.txt"
    constraints.write_text("torch=={}\n".format(torch_version), encoding="utf-8")
    say("installing vizattn (editable) with its [dev] extras; the first time takes a few minutes")
    run(
        [venv_python(), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", constraints, "-e", ".[dev]"],
        "pip install -e .[dev]",
        cwd=str(ROOT),
    )
    install_natten()
    install_reference()
    STAMP.write_text("{}\ntorch {}\n".format(wanted, torch_version), encoding="utf-8")
    ensure_native()
    say("set-up done")


def ensure_native():
    """Compile attend's native CPU kernel into torch's extension cache (`python -m vizattn.native build`) once
    per change of its sources: attend never compiles it. Without a compiler it says why and goes on: attend
    then uses its tiled backend and says so (CI's tests fail instead)."""
    sources = [ROOT / "vizattn" / "csrc" / "slot_attention.cpp", ROOT / "vizattn" / "backends" / "native.py"]
    wanted = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    if NATIVE_STAMP.is_file() and NATIVE_STAMP.read_text(encoding="utf-8").strip() == wanted:
        return
    result = subprocess.run([str(venv_python()), "-m", "vizattn.native", "build"], cwd=str(ROOT))
    if result.returncode != 0:
        say("the native kernel was not built (see above); attend uses its tiled backend")
        return
    NATIVE_STAMP.write_text(wanted + "\n", encoding="utf-8")
    say("native kernel built")


def install_natten():
    """NATTEN, the reference NA/DiNAT implementation, for a forward cross-check in the tests.

    It ships as a source package whose build needs torch, so it is built against the torch in
    .venv (--no-build-isolation); a build environment of its own would pull another torch.
    Best effort: without it, that one test is skipped (and fails under CI=true).
    """
    say("installing NATTEN for the cross-check test (pure Python build against .venv's torch)")
    cmd = [venv_python(), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-build-isolation", "natten"]
    try:
        run(cmd, "installing natten")
    except DevError as exc:
        say("{}; the NATTEN cross-check will be skipped".format(exc))


def install_reference():
    """timm, the reference for the exactness tests of vizattn.checkpoints, without its dependencies.

    timm requires torchvision, and pip would install the registry's torchvision wheel (or even
    another torch): that wheel cannot load its compiled operators next to a CPU build of torch
    ("operator torchvision::nms does not exist"). timm's model code needs no torchvision, so the
    tests import timm behind a placeholder torchvision (tests/reference/timm_models.py).
    """
    say("installing the reference models for the checkpoint tests ({}, --no-deps)".format(", ".join(REFERENCE)))
    run([venv_python(), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"] + REFERENCE,
        "installing " + ", ".join(REFERENCE))


# --- commands -------------------------------------------------------------------------

def execute(cmd):
    """Replace this process with cmd (POSIX), or run it and pass its exit code on (Windows)."""
    cmd = [str(c) for c in cmd]
    sys.stdout.flush()
    sys.stderr.flush()
    if WINDOWS:
        try:
            sys.exit(subprocess.call(cmd))
        except KeyboardInterrupt:
            sys.exit(130)
    try:
        os.execv(cmd[0], cmd)
    except OSError as exc:
        raise DevError("could not start {}: {}".format(cmd[0], exc)) from None


def default_workspace(folder):
    """Write JupyterLab's "default" workspace into ``folder`` unless it holds one: the tour open
    in the main area, so the bare /lab address lands on it too (later, JupyterLab saves the
    user's own layout there). Returns the workspace file."""
    # JupyterLab names a workspace file by its slug and the start of the name's SHA-256
    path = Path(folder) / "default-{}.jupyterlab-workspace".format(hashlib.sha256(b"default").hexdigest()[:4])
    if not path.is_file():
        tab = "notebook:" + TOUR
        layout = {"main": {"dock": {"type": "tab-area", "currentIndex": 0, "widgets": [tab]}, "current": tab},
                  # JupyterLab's own start: the file browser open on the left, the right side bar closed
                  "left": {"collapsed": False, "visible": True, "current": "filebrowser",
                           "widgets": ["filebrowser", "running-sessions", "@jupyterlab/toc:plugin"]},
                  "right": {"collapsed": True, "visible": True, "widgets": ["jp-property-inspector"]}}
        data = {"layout-restorer:data": layout, tab: {"data": {"path": TOUR, "factory": "Notebook"}}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"data": data, "metadata": {"id": "default"}}), encoding="utf-8")
    return path


def lab_command(args):
    """The `jupyter lab` command line of `lab`: notebooks/ as root, the tour as landing page on "/"
    and, through a default workspace, on the bare /lab address (and --allow-root when run as
    root, as in many containers)."""
    notebooks = ROOT / "notebooks"
    if not notebooks.is_dir():
        raise DevError("no notebooks/ folder in " + str(ROOT))
    jupyter = venv_script("jupyter")
    cmd = [str(jupyter)] if jupyter.exists() else [str(venv_python()), "-m", "jupyter"]
    cmd.append("lab")
    # Jupyter refuses an option given twice: the user's own root or landing page replaces ours
    options = dict(a.split("=", 1) if "=" in a else (a, "") for a in args)
    given = set(options)
    if not given & {"--ServerApp.root_dir", "--notebook-dir", "--ServerApp.notebook_dir"}:
        cmd.append("--ServerApp.root_dir=" + str(notebooks))
    if (notebooks / TOUR).is_file():
        if not given & {"--LabApp.default_url", "--ServerApp.default_url"}:
            # the page the browser opens (and "/" redirects to): the tour, inside the notebooks folder
            cmd.append("--LabApp.default_url=/lab/tree/" + TOUR)
        if "--LabApp.workspaces_dir" not in given:
            cmd.append("--LabApp.workspaces_dir=" + str(WORKSPACES))
        default_workspace(options.get("--LabApp.workspaces_dir") or WORKSPACES)
    if not WINDOWS and os.geteuid() == 0 and "--allow-root" not in given:
        # containers often run as root, where Jupyter refuses to start without this flag
        cmd.append("--allow-root")
    return cmd + list(args)


def cmd_lab(args):
    ensure_setup()
    tour = ROOT / "notebooks" / TOUR
    cmd = lab_command(args)
    say("starting JupyterLab on " + str(tour if tour.is_file() else tour.parent))
    execute(cmd)


def cmd_test(args):
    ensure_setup()
    os.chdir(str(ROOT))
    # the notebooks (run by nbval, see pyproject.toml) read VIZATTN_FAST to shrink their sizes
    os.environ.setdefault("VIZATTN_FAST", "1")
    execute([venv_python(), "-m", "pytest"] + list(args))


def cmd_site(args):
    ensure_setup()
    os.chdir(str(ROOT))
    os.environ.setdefault("VIZATTN_FAST", "1")  # as the tests run the notebooks
    execute([venv_python(), "-m", "vizattn.site"] + list(args))


# --- notebooks: strip outputs (standard library only, no set-up needed) ---------------

# notebook-level metadata that records a run, not the notebook
RUN_METADATA = ("widgets", "execution")
# metadata.language_info as the Python kernel (ipykernel) reports it on start. JupyterLab writes
# the kernel's record into the notebook when it connects, so any other value marks every notebook
# modified on opening; "version" (the kernel's Python) is kept when present.
LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                 "pygments_lexer": "ipython3"}


def strip_notebook(nb):
    """A copy of notebook ``nb`` (parsed JSON) with no outputs, execution counts or widget state.

    Every cell keeps its source, id and metadata except the records of a run (``execution``
    timings, ``collapsed``/``scrolled`` output views, ``ExecuteTime``); the notebook loses
    ``metadata.widgets`` (saved widget state) and ``metadata.execution``, and its
    ``metadata.language_info`` becomes the kernel's own (LANGUAGE_INFO, with the Python version
    it had, else this one's), so that JupyterLab opens it unmodified.
    """
    nb = json.loads(json.dumps(nb))
    meta = nb.setdefault("metadata", {})
    for key in RUN_METADATA:
        meta.pop(key, None)
    version = meta.get("language_info", {}).get("version") or platform.python_version()
    meta["language_info"] = dict(LANGUAGE_INFO, version=version)
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        for key in ("execution", "collapsed", "scrolled", "ExecuteTime"):
            meta.pop(key, None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    return nb


def notebook_text(nb):
    """JSON text as Jupyter writes it (nbformat: indent 1, sorted keys, UTF-8, final newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False) + "\n"


def cmd_strip(args):
    check = "--check" in args
    paths = [Path(a) for a in args if a != "--check"]
    if not paths:
        paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        if not path.is_file() or path.suffix != ".ipynb":
            raise DevError("not a notebook file: {}".format(path))
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DevError("{} is not valid notebook JSON: {}".format(path, exc)) from None
        clean = strip_notebook(nb)
        if clean == nb:
            continue  # already clean: leave the file (and its formatting) alone
        dirty.append(path)
        if not check:
            path.write_text(notebook_text(clean), encoding="utf-8")
    for path in dirty:
        say("{} {}".format("needs stripping:" if check else "stripped", path))
    if check and dirty:
        raise DevError("{} notebook(s) carry outputs or widget state; run: python3 dev.py strip".format(len(dirty)))
    if not dirty:
        say("{} notebook(s) clean".format(len(paths)))


COMMANDS = {"lab": cmd_lab, "test": cmd_test, "strip": cmd_strip, "site": cmd_site}


def main(argv):
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        sys.stderr.write("dev.py: unknown command {!r}\n\n".format(argv[0]) + USAGE)
        return 2
    try:
        command(argv[1:])
    except DevError as exc:
        sys.stderr.write("dev.py: error: {}\n".format(exc))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("dev.py: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
