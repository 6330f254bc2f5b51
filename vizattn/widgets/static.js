// An explorer without a kernel (vizattn.widgets.static): the controls pick a precomputed state, whose figures
// (a base figure per panel and the properties that differ from it) go to Plotly.react. `script` is this script.
(function (script) {
  const root = script.parentElement, spec = JSON.parse(script.previousElementSibling.textContent);
  const controls = [...root.querySelectorAll('[data-control]')];
  const panels = [...root.querySelectorAll('[data-panel]')], texts = [...root.querySelectorAll('[data-text]')];
  const at = spec.controls.map(c => c.start), drawn = [];
  const config = {displaylogo: false, responsive: false};
  const figure = (p, s) => {
    const base = spec.base[p], data = base.data.map(t => Object.assign({}, t));
    const layout = Object.assign({}, base.layout);
    for (const [t, key, v] of spec.patches[spec.states[s][p]]) {
      const value = spec.values[v];
      const part = t < 0 ? layout : data[t];
      if (value === null) delete part[key]; else part[key] = value;
    }
    for (const key of Object.keys(layout)) if (layout[key] && typeof layout[key] === 'object' && !Array.isArray(layout[key]))
      layout[key] = Object.assign({}, layout[key]);  // plotly.js writes computed ranges back into the layout
    return {data, layout};
  };
  const state = () => at.reduce((s, i, k) => s * spec.controls[k].options.length + i, 0);
  const show = (first) => {
    const s = state();
    panels.forEach((div, n) => {
      const p = +div.dataset.panel, patch = spec.states[s][p];
      if (!first && drawn[p] === patch) return;
      const f = figure(p, s);
      (first ? Plotly.newPlot : Plotly.react)(div, f.data, f.layout, config);
      drawn[p] = patch;
    });
    texts.forEach((div, t) => { div.innerHTML = spec.shown[spec.texts[s][t]]; });
  };
  for (const input of controls) {
    input.addEventListener('input', () => {
      const k = +input.dataset.control;
      at[k] = +input.value;
      const out = input.parentElement.querySelector('output');
      if (out) out.textContent = spec.controls[k].options[at[k]];
      show(false);
    });
  }
  show(true);
})(document.currentScript);
