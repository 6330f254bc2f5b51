"""Drive JupyterLab in headless Chromium (Debian's, through Playwright) for tests/test_browser.py.

The JupyterLab server (``jupyterlab``), the browser (``in_browser``), a notebook opened and run
(``open_notebook``, ``run_all``), the layout rules checked on the open notebook (``layout_problems``)
and the sweep of every control of an explorer with the latency of each move measured in the page
(``sweep``). Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 1000}
WAIT_MS = 60_000  # any single page wait
MIN_MOVES = 4  # a control's positions are swept again until it has this many moves (for its latency median)
RUN_MS = 300_000  # a whole notebook's Run All
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on show (others stay in the page)


def need(what: str) -> None:
    """Missing tooling: a failure under CI, a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set: the browser test must run; .ci/run installs chromium, "
                    f"pip install -e .[test] installs playwright)")
    pytest.skip(what)


def tooling() -> None:
    if not Path(CHROMIUM).exists():
        need(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        need("the playwright package is missing (pip install playwright)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "api/status", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout:.0f} s")


@contextlib.contextmanager
def jupyterlab(command: list[str], root: Path):
    """Run ``command`` (a ``jupyter lab`` command line that serves ``root``) on 127.0.0.1; yield its URL.

    Temporary runtime, config, workspace and settings folders (unless ``command`` names its own
    workspaces folder); no token; every notebook cell attached to the page; no news toast.
    """
    tmp = Path(tempfile.mkdtemp(prefix="vizattn-browser-"))
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), PYTHONUNBUFFERED="1")
    settings = {"notebook-extension/tracker": {"windowingMode": "none"},  # JupyterLab skips cells out of view
                "apputils-extension/notification": {"fetchNews": "false"}}  # no news toast over the screenshots
    for name, values in settings.items():
        path = tmp / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = _free_port()
    options = {"--no-browser": None, "--allow-root": None, "--ip": "127.0.0.1", "--port": str(port),
               "--ServerApp.port_retries": "0", "--IdentityProvider.token": "", "--ServerApp.password": "",
               "--LabApp.workspaces_dir": str(tmp / "workspaces"), "--LabApp.user_settings_dir": str(tmp / "settings"),
               "--LabApp.news_url": "", "--LabApp.check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}
    given = {a.split("=")[0] for a in command}  # Jupyter refuses an option given twice: the command's own win
    extra = [k if v is None else f"{k}={v}" for k, v in options.items() if k not in given]
    log = open(tmp / "jupyter.log", "w")
    lab = subprocess.Popen(command + extra, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(root))
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_server(url, lab, timeout=60)
        yield url
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def in_browser(drive, failure_shot: str) -> None:
    """Open headless Chromium at 1400x1000 and call ``drive(page)``; on failure keep a screenshot,
    the cell outputs and the console errors in the assertion message."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=WAIT_MS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(WAIT_MS)
            console = []
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"[:300]))
            try:
                drive(page)
            except Exception as exc:  # keep what the page showed, then fail with it
                page.screenshot(path=str(SHOTS / failure_shot), full_page=True)
                outputs = page.locator(f"{PANEL} .jp-OutputArea").all_inner_texts()
                errors = [c for c in console if c.startswith(("error", "warning"))][-15:]
                raise AssertionError(f"{exc}\n-- cell outputs: {[o[:500] for o in outputs]}\n-- console: {errors}\n"
                                     f"-- screenshot: {SHOTS / failure_shot}") from exc
        finally:
            browser.close()


def open_tabs(page) -> dict:
    """The main area's tabs: ``{"current": label, "dirty": [labels with the modified dot], "all": [...]}``."""
    return page.evaluate("""() => { const tabs = [...document.querySelectorAll('#jp-main-dock-panel .lm-TabBar-tab')];
        const label = t => t.querySelector('.lm-TabBar-tabLabel').textContent;
        const cur = tabs.find(t => t.classList.contains('jp-mod-current'));
        return {current: cur ? label(cur) : null, all: tabs.map(label),
                dirty: tabs.filter(t => t.classList.contains('jp-mod-dirty')).map(label)}; }""")


IDLE_JS = (f"() => {{ const e = document.querySelector('{PANEL} .jp-Notebook-ExecutionIndicator');"
           " return !!e && e.dataset.status === 'idle'; }")


def wait_kernel_idle(page, timeout: int = WAIT_MS) -> None:
    page.wait_for_function(IDLE_JS, timeout=timeout)


def accept_kernel_dialog(page) -> bool:
    """Accept JupyterLab's "Select Kernel" dialog if it is on show (the notebook's own kernel is
    preselected): JupyterLab asks when the server answered its kernel requests slowly (a loaded
    machine), which blocks every click. Returns whether there was one."""
    dialog = page.locator(".jp-Dialog").filter(has_text="Select Kernel")
    if not dialog.count():
        return False
    dialog.locator(".jp-mod-accept").first.click()
    dialog.wait_for(state="detached")
    return True


# Whether the open notebook's kernel has started and is idle, from the server's sessions: the page's
# execution indicator already reads "idle" while the notebook loads, before its kernel exists.
KERNEL_READY_JS = """async (name) => {
  const base = JSON.parse(document.getElementById('jupyter-config-data').textContent).baseUrl || '/';
  const r = await fetch(base + 'api/sessions', {cache: 'no-store'}); if (!r.ok) return false;
  return (await r.json()).some(s => s.path.split('/').pop() === name && s.kernel && s.kernel.execution_state === 'idle');
}"""


def settled_tabs(page, name: str, still_ms: int = 1500, limit_ms: int = WAIT_MS) -> dict:
    """``open_tabs`` once notebook ``name`` has settled: its kernel started (the server says so) and
    idle, and the tabs unchanged for ``still_ms``. Measured: JupyterLab shows the modified dot for
    a moment while it loads a notebook, before the kernel starts; a change of the file's content
    (JupyterLab writes the kernel's record into the metadata when the kernel connects) keeps it
    until the notebook is saved (autosave: after minutes), so a dot still there now is real.
    ``kernel_dialogs`` counts the "Select Kernel" dialogs accepted on the way."""
    seen, since, start, dialogs = None, 0, time.monotonic(), 0
    while (time.monotonic() - start) * 1000 < limit_ms:
        dialogs += accept_kernel_dialog(page)
        tabs = open_tabs(page)
        ready = page.evaluate(IDLE_JS) and page.evaluate(KERNEL_READY_JS, name)
        now = (tabs["current"], tuple(tabs["dirty"]), ready)
        if now != seen:
            seen, since = now, time.monotonic()
        elif ready and (time.monotonic() - since) * 1000 >= still_ms:
            return dict(tabs, kernel_dialogs=dialogs)
        page.wait_for_timeout(100)
    raise AssertionError(f"{name} did not settle (kernel started and idle, tabs still) within {limit_ms} ms: {seen}")


def open_notebook(page, url: str, name: str) -> None:
    """Open notebook ``name`` (relative to the server root), wait for its kernel; it must show
    the file browser beside it and must not be marked modified."""
    page.goto(f"{url}lab/tree/{name}", timeout=WAIT_MS)
    page.wait_for_function("(name) => { const t = document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.jp-mod-current');"
                           " return t && t.textContent.includes(name); }", arg=name.split("/")[-1], timeout=WAIT_MS)
    page.locator(f"{PANEL} .jp-Cell").first.wait_for(state="visible")
    tabs = settled_tabs(page, name.split("/")[-1])
    assert tabs["current"] == name.split("/")[-1], tabs
    assert name.split("/")[-1] not in tabs["dirty"], f"{name} is marked modified right after opening: {tabs}"
    width = page.evaluate("() => { const f = document.querySelector('#filebrowser');"
                          " return f && f.offsetParent ? f.getBoundingClientRect().width : 0; }")
    assert width > 100, "the file browser is not open beside the notebook"


def wait_kernel_ready(page, timeout: int = WAIT_MS) -> None:
    """Wait until the open notebook's kernel has started and is idle (the server's sessions say so;
    the page's indicator reads idle before), accepting a "Select Kernel" dialog on the way."""
    name, start = open_tabs(page)["current"], time.monotonic()
    while not (page.evaluate(IDLE_JS) and page.evaluate(KERNEL_READY_JS, name)):
        if (time.monotonic() - start) * 1000 > timeout:
            raise AssertionError(f"the kernel of {name} did not start within {timeout} ms")
        accept_kernel_dialog(page)
        page.wait_for_timeout(100)


def run_all(page) -> None:
    """Run All Cells once the kernel is ready, and wait until every code cell has a run number and
    none shows an error."""
    wait_kernel_ready(page)
    cells = page.locator(f"{PANEL} .jp-CodeCell").count()
    prompt = f"{PANEL} .jp-CodeCell .jp-InputPrompt"
    for attempt in range(3):  # a Run All sent while the kernel is still settling can be dropped: retry
        accept_kernel_dialog(page)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function("(sel) => { const p = document.querySelector(sel);"
                                   " return p && /\\[(\\*|\\d+)\\]/.test(p.textContent); }", arg=prompt, timeout=20_000)
            break
        except Exception as exc:
            if attempt == 2:
                raise AssertionError(
                    f"the first code cell never ran: {page.locator(prompt).first.text_content()!r}") from exc
    page.wait_for_function(
        "([sel, n]) => { const p = [...document.querySelectorAll(sel)];"
        " return p.length === n && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }", arg=[prompt, cells],
        timeout=RUN_MS)
    wait_kernel_idle(page)
    assert not error_texts(page), error_texts(page)


def error_texts(page) -> list[str]:
    """Error outputs of the open notebook: stderr, tracebacks, and "Error"/"Traceback" text in
    any output (the explorers' deliberate explanations are titled "nothing to draw" instead)."""
    return page.evaluate(f"""() => [...document.querySelectorAll('{PANEL} .jp-OutputArea-output')]
        .filter(o => o.dataset.mimeType === 'application/vnd.jupyter.stderr' || o.querySelector('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
                     || /Traceback|\\w+Error\\b|Exception/.test(o.innerText))
        .map(o => o.innerText.slice(0, 400))""")


# The layout rules, on every output of the open notebook: returns one sentence per problem.
MIN_PLOT_PX = 300  # the narrowest drawing area a figure may have (plot area inside its margins, legend and colour bar)
LAYOUT_JS = """([panel, scope]) => {
  const MIN_PLOT_PX = """ + str(MIN_PLOT_PX) + """;
  const root = document.querySelector(panel), out = [], mine = scope ? document.querySelector(scope) : null;
  const shown = e => e.offsetParent !== null && e.getClientRects().length > 0;
  const box = e => e.getBoundingClientRect();
  const where = e => { const c = e.closest('.jp-CodeCell'); const p = c && c.querySelector('.jp-InputPrompt');
                       return p ? p.textContent.trim() : '[?]'; };
  const name = e => { const w = e.closest('.widget-inline-hbox') || e; const l = w.querySelector('.widget-label');
                      return ((l && l.textContent) || e.textContent || e.className).trim().slice(0, 40); };
  const ctx = document.createElement('canvas').getContext('2d');
  for (const o of root.querySelectorAll('.jp-OutputArea-output')) {
    if (!shown(o) || (mine && !o.contains(mine))) continue;
    const ob = box(o);
    if (o.scrollWidth > o.clientWidth + 1) out.push(`${where(o)} output scrolls sideways (${o.scrollWidth} > ${o.clientWidth} px)`);
    for (const t of o.querySelectorAll('.widget-hslider .noUi-target')) {
      if (shown(t) && box(t).width < 100) out.push(`${where(t)} slider "${name(t)}": track ${Math.round(box(t).width)} px`);
    }
    for (const l of o.querySelectorAll('.widget-label, .widget-label-basic, .widget-readout, button, .widget-toggle-button')) {
      if (shown(l) && l.textContent.trim() && l.scrollWidth > l.clientWidth + 1)
        out.push(`${where(l)} label "${l.textContent.trim()}" clipped (${l.scrollWidth} > ${l.clientWidth} px)`);
    }
    for (const s of o.querySelectorAll('.widget-dropdown select')) {
      if (!shown(s) || s.selectedIndex < 0) continue;
      ctx.font = getComputedStyle(s).font;
      const text = s.options[s.selectedIndex].text, need = ctx.measureText(text).width + 24;  // + the arrow
      if (need > s.clientWidth + 1) out.push(`${where(s)} menu "${name(s)}" cuts "${text}" (${Math.round(need)} > ${s.clientWidth} px)`);
    }
    for (const w of o.querySelectorAll('.jupyter-widgets')) {
      if (!shown(w) || w.closest('.js-plotly-plot') || w.matches('.widget-label, .widget-readout, button, .widget-html')) continue;
      const ox = getComputedStyle(w).overflowX;
      if (ox !== 'visible' && w.scrollWidth > w.clientWidth + 1)
        out.push(`${where(w)} widget "${name(w)}" scrolls sideways (${w.scrollWidth} > ${w.clientWidth} px)`);
      if (box(w).right > ob.right + 1) out.push(`${where(w)} widget "${name(w)}" ends ${Math.round(box(w).right - ob.right)} px past its output area`);
    }
    for (const p of o.querySelectorAll('.widget-play')) {
      if (!shown(p)) continue;
      const near = [p, p.previousElementSibling, p.nextElementSibling].filter(e => e);
      if (!near.some(e => e.textContent.trim() || (e.title || '').trim()))
        out.push(`${where(p)} a Play button without a label`);
    }
    for (const p of o.querySelectorAll('.js-plotly-plot')) {
      const svg = p.querySelector('.main-svg');
      if (!shown(p) || !svg) continue;
      const sb = box(svg), t = p.querySelector('.gtitle'), title = t ? t.textContent.slice(0, 50) : '';
      if (sb.right > ob.right + 1) out.push(`${where(p)} figure "${title}" ${Math.round(sb.width)} px wide ends ${Math.round(sb.right - ob.right)} px past its output area`);
      const size = p._fullLayout && p._fullLayout._size;  // the drawing area: the figure less its margins (legend, colour bar)
      if (size && p.data && p.data.some(d => d.visible !== false) && size.w < MIN_PLOT_PX)
        out.push(`${where(p)} figure "${title}": drawing area ${Math.round(size.w)} px wide (< ${MIN_PLOT_PX})`);
      for (const [axes, ticks, along] of [['.xaxislayer-above', '.xtick text', 'x'], ['.yaxislayer-above', '.ytick text', 'y']]) {
        // labels plotly turned by 30 or 60 degrees clear each other while their boxes overlap: left out
        const turn = l => Math.abs(parseFloat(((l.getAttribute('transform') || '').match(/rotate\\((-?[\\d.]+)/) || [0, 0])[1]));
        for (const axis of p.querySelectorAll(axes)) {
          const labels = [...axis.querySelectorAll(ticks)].filter(l => l.textContent.trim() && turn(l) % 90 === 0)
            .map(l => [l.textContent.trim(), box(l)]).filter(([, b]) => b.width > 0)
            .sort((a, b) => along === 'x' ? a[1].left - b[1].left : a[1].top - b[1].top);
          for (let i = 1; i < labels.length; i++) {
            const [ta, a] = labels[i - 1], [tb, b] = labels[i];
            if (along === 'x' ? a.right > b.left + 0.5 && a.top < b.bottom && b.top < a.bottom
                              : a.bottom > b.top + 0.5 && a.left < b.right && b.left < a.right)
              { out.push(`${where(p)} figure "${title}": tick labels "${ta}" and "${tb}" overlap`); break; }
          }
        }
      }
      if (t && t.textContent) {
        const tb = box(t);
        if (tb.left < sb.left - 1 || tb.right > sb.right + 1) out.push(`${where(p)} title "${title}" cut by the figure's edge`);
        const m = p.querySelector('.modebar');
        if (m && shown(m)) { const mb = box(m);
          if (mb.left < tb.right && tb.left < mb.right && mb.top < tb.bottom && tb.top < mb.bottom)
            out.push(`${where(p)} plotly's toolbar covers the title "${title}"`); }
      }
    }
  }
  return out;
}"""


def layout_problems(page, scope: str = "") -> list[str]:
    """Every break of the layout rules in the open notebook's outputs (see LAYOUT_JS), or only in
    the output that holds ``scope``."""
    return page.evaluate(LAYOUT_JS, [PANEL, scope])


# -- the sweep: every control of one explorer through every position it can reach ----------------

# The controls of an explorer, numbered in the page (data-sweep): sliders, menus, toggle buttons, check boxes.
CONTROLS_JS = """(scope) => {
  const root = document.querySelector(scope), found = [];
  const shown = e => e.offsetParent !== null && e.getClientRects().length > 0;
  const label = w => { const l = w.querySelector('.widget-label'), t = (l && l.textContent.trim()) || '';
                       return (t.replace('\u200b', '') || w.innerText.trim()).slice(0, 30); };
  const kinds = [['.widget-hslider', 'slider'], ['.widget-dropdown', 'menu'], ['.widget-select-multiple', 'multi'],
                 ['.widget-toggle-buttons', 'toggles'], ['.widget-checkbox', 'checkbox']];
  for (const w of root.querySelectorAll(kinds.map(k => k[0]).join(', '))) {
    if (w.dataset.sweep === undefined) w.dataset.sweep = String(document.querySelectorAll('[data-sweep]').length);
    const kind = kinds.find(([sel]) => w.matches(sel))[1];
    const disabled = !!w.querySelector('[disabled]') || w.classList.contains('mod-disabled');
    const c = {id: w.dataset.sweep, kind, label: label(w), shown: shown(w), disabled};
    if (kind === 'slider') { const h = w.querySelector('.noUi-handle');
      Object.assign(c, {min: +h.getAttribute('aria-valuemin'), max: +h.getAttribute('aria-valuemax'),
                        value: +h.getAttribute('aria-valuenow')}); }
    if (kind === 'menu' || kind === 'multi') { const s = w.querySelector('select');
      Object.assign(c, {options: [...s.options].map(o => o.value), value: s.value,
                        selected: [...s.selectedOptions].map(o => o.value)}); }
    if (kind === 'toggles') Object.assign(c, {options: [...w.querySelectorAll('button')].map(b => b.textContent.trim())});
    found.push(c);
  }
  return found;
}"""

# Before a move: remember the picture, listen for the input event and for every change of the plots.
ARM_JS = """(scope) => {
  const root = document.querySelector(scope);
  const picture = () => [...root.querySelectorAll('.js-plotly-plot, .widget-html-content')].map(e => e.innerHTML).join('|');
  const m = window.__sweep = {t0: null, first: null, last: null, before: picture(), picture};
  m.start = e => { if (m.t0 === null) m.t0 = e.timeStamp; };  // same clock as performance.now()
  for (const ev of ['keydown', 'input', 'change', 'click']) window.addEventListener(ev, m.start, true);
  m.obs = new MutationObserver(() => { if (m.t0 === null) return; const t = performance.now();
                                       if (m.first === null) m.first = t; m.last = t; });
  for (const p of root.querySelectorAll('.js-plotly-plot'))
    m.obs.observe(p, {subtree: true, childList: true, attributes: true, characterData: true});
}"""

# After a move: wait until the kernel is idle and the plots kept still for a while; the latencies.
SETTLE_JS = """async ([panel, quiet, still]) => {
  const m = window.__sweep, sleep = t => new Promise(r => setTimeout(r, t));
  const idle = () => { const e = document.querySelector(panel + ' .jp-Notebook-ExecutionIndicator');
                       return e && e.dataset.status === 'idle'; };
  const end = performance.now() + 30000;
  while (performance.now() < end) {
    await sleep(40);
    const now = performance.now();
    if (m.t0 === null || !idle()) continue;
    if (m.first !== null ? now - m.last > quiet : now - m.t0 > still) break;
  }
  m.obs.disconnect();
  for (const ev of ['keydown', 'input', 'change', 'click']) window.removeEventListener(ev, m.start, true);
  return {first: m.first === null ? null : m.first - m.t0, finished: m.last === null ? null : m.last - m.t0,
          changed: m.picture() !== m.before, started: m.t0 !== null};
}"""


def _settle(page, scope: str) -> dict:
    return page.evaluate(SETTLE_JS, [PANEL, 150, 1000])


def _explanations(page, scope: str) -> list[str]:
    """The deliberate explanations on show in an explorer: its panels titled "nothing to draw"."""
    return page.evaluate("""(scope) => [...document.querySelectorAll(scope + ' .js-plotly-plot')]
        .filter(p => p.offsetParent !== null && (p.querySelector('.gtitle') || {}).textContent === 'nothing to draw')
        .map(p => [...p.querySelectorAll('.annotation-text')].map(a => a.textContent).join(' '))""", scope)


def sweep(page, scope: str, explorer: str, latencies: dict, failures: dict, allowed=()) -> int:
    """Move every control of the explorer ``scope`` through every position it can reach: each
    slider from its minimum to its maximum (keyboard: Home, then the right arrow) and back (typed
    into its readout), each menu and toggle through its options, each option of a multiple choice
    off and on, each slider again whenever a menu change showed it; a control with fewer than
    ``MIN_MOVES`` positions goes through them again until it has that many moves. After each move:
    the picture changed, no error text, no layout problem, no explanation other than those matching
    ``allowed``; what breaks a rule goes into ``failures`` (``{sentence: first move that showed
    it}``). Latencies (ms, the committing input event, a key press or a click, to the first change
    of a plot, and to the plot's last change; a typed value counts from its Enter) go into
    ``latencies[(explorer, control)]``; returns the number of moves."""
    counts = collections.Counter()  # moves of each control
    done = set()

    def controls():
        return page.evaluate(CONTROLS_JS, scope)

    def move(control, position, act, prepare=None):
        if prepare:  # what happens before the committing input (typing a value): not part of the latency
            prepare()
        page.evaluate(ARM_JS, scope)
        act()
        result = _settle(page, scope)
        counts[control["id"]] += 1
        what = f"{explorer}: {control['kind']} {control['label']!r} -> {position}"
        found = [] if result["started"] else ["no input event reached the page"]
        if not result["changed"]:
            found.append(f"{control['kind']} {control['label']!r} changed nothing (hide or disable it when it cannot)")
        found += [f"error text: {e}" for e in error_texts(page)] + layout_problems(page, scope)
        found += [f"an explanation on show: {e}" for e in _explanations(page, scope) if not any(a in e for a in allowed)]
        for sentence in found:  # one entry per rule and place: titles and sizes vary from move to move
            failures.setdefault(re.sub(r'\d+', 'N', re.sub(r'"[^"]*"', '"…"', f"{explorer}: {sentence}")),
                                f"{sentence}   (first seen: {what})")
        if result["first"] is not None:
            latencies.setdefault((explorer, control["label"] or control["kind"]), []).append(
                (result["first"], result["finished"]))

    def sweep_control(c):
        """One pass of the control through its positions (it ends where it began), again until it
        has ``MIN_MOVES`` moves: a median of two moves would be their mean."""
        while True:
            before = counts[c["id"]]
            passes[c["kind"]](c)
            if counts[c["id"]] >= MIN_MOVES or counts[c["id"]] == before:
                return

    def slider_pass(c):
        handle = page.locator(f"[data-sweep='{c['id']}'] .noUi-handle")
        handle.focus()
        if c["value"] != c["min"]:
            move(c, c["min"], lambda: handle.press("Home"))
        while True:  # the right arrow up to the maximum, read again after each move (a move can change it)
            now, top = (float(handle.get_attribute(a)) for a in ("aria-valuenow", "aria-valuemax"))
            if now >= top:
                break
            move(c, f"{now:g} + 1 step", lambda: handle.press("ArrowRight"))
        if c["value"] != float(handle.get_attribute("aria-valuenow")):  # back where it was: typed into the readout
            readout = page.locator(f"[data-sweep='{c['id']}'] .widget-readout")
            move(c, f"{c['value']:g} typed", lambda: readout.press("Enter"), lambda: readout.fill(f"{c['value']:g}"))

    def sweep_new_sliders():
        for c in controls():
            if c["kind"] == "slider" and c["shown"] and not c["disabled"] and c["id"] not in done and c["max"] > c["min"]:
                done.add(c["id"])
                sweep_control(c)

    def menu_pass(c):
        select = page.locator(f"[data-sweep='{c['id']}'] select")
        for option in [o for o in c["options"] if o != c["value"]] + [c["value"]]:
            move(c, option, lambda: select.select_option(option))
            sweep_new_sliders()

    def multi_pass(c):  # each option toggled, then back
        select = page.locator(f"[data-sweep='{c['id']}'] select")
        for option in c["options"]:
            toggled = sorted(set(c["selected"]) ^ {option})
            move(c, f"{option} {'off' if option in c['selected'] else 'on'}", lambda: select.select_option(toggled))
            move(c, "back", lambda: select.select_option(c["selected"]))

    def toggles_pass(c):  # each other button, then back to the one that was active
        buttons, n = page.locator(f"[data-sweep='{c['id']}'] button"), len(c["options"])
        start = max(buttons.evaluate_all("bs => bs.findIndex(b => b.classList.contains('mod-active'))"), 0)
        for k in range(start + 1, start + n + 1):
            move(c, c["options"][k % n], buttons.nth(k % n).click)
            sweep_new_sliders()

    def checkbox_pass(c):
        box = page.locator(f"[data-sweep='{c['id']}'] input")
        for state in ("toggled", "back"):
            move(c, state, box.click)
            sweep_new_sliders()

    passes = {"slider": slider_pass, "menu": menu_pass, "multi": multi_pass, "toggles": toggles_pass,
              "checkbox": checkbox_pass}
    sweep_new_sliders()
    for c in controls():
        if c["shown"] and not c["disabled"] and c["kind"] != "slider":
            sweep_control(c)
    return sum(counts.values())


def latency_misses(latencies: dict, targets: dict, switches) -> dict:
    """``{(explorer, control): sentence}`` for each control whose median misses its target:
    ``targets["first"]`` to the first change and ``targets["finished"]`` to the finished plot, or
    ``targets["switch"]`` for both when the control's label is one of ``switches``."""
    misses = {}
    for key, values in latencies.items():
        switch = key[1] in switches
        for n, what in enumerate(("first", "finished")):
            median, target = statistics.median(v[n] for v in values), targets["switch" if switch else what]
            if median > target:
                misses.setdefault(key, []).append(f"{what} {median:.0f} > {target} ms")
    return {key: ", ".join(found) for key, found in misses.items()}


def latency_report(latencies: dict, misses: dict | None = None) -> str:
    """One line per control: moves, median and worst (ms) to the first change and to the finished
    plot, and ``misses[(explorer, control)]`` (``latency_misses``) or "ok"."""
    lines = [f"{'explorer':<12} {'control':<22} {'moves':>5} {'first median':>13} {'worst':>7} "
             f"{'finished median':>16} {'worst':>7}  target"]
    for (explorer, control), values in sorted(latencies.items()):
        first, finished = [v[0] for v in values], [v[1] for v in values]
        verdict = "" if misses is None else (misses.get((explorer, control)) or "ok")
        lines.append(f"{explorer:<12} {control[:22]:<22} {len(values):>5} {statistics.median(first):>13.0f} "
                     f"{max(first):>7.0f} {statistics.median(finished):>16.0f} {max(finished):>7.0f}  {verdict}")
    return "\n".join(lines)
