// The browser side of vizattn.widgets.figure.FigureWidget (an anywidget module).
//
// It speaks plotly's FigureWidget protocol (the _py2js_* edits from Python, _js2py_* reports back)
// but hands each edit to plotly.js as it is. plotly's own front end adds a marker to every edit,
// which plotly.js takes for an unknown attribute and answers with a full replot; without it a
// layout-only edit (a query's outline moving) costs about a millisecond instead of a redraw.
//
// PLOTLY_SOURCE (plotly.min.js, the one plotly's Python package ships) is put in front of this
// file by figure.py. The page loads it once, however many figures arrive, as a module of its own
// (the way anywidget loads this one, so it needs nothing anywidget does not).

const SHARED = Symbol.for("vizattn.plotly");

function plotly() {
  if (!globalThis[SHARED]) {
    const source = `const module = { exports: {} };\n${PLOTLY_SOURCE}\nexport default module.exports;`;
    const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    globalThis[SHARED] = import(url).then((loaded) => loaded.default).finally(() => URL.revokeObjectURL(url));
  }
  return globalThis[SHARED];
}

const ARRAYS = {
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array,
  int32: Int32Array, uint32: Uint32Array, float32: Float32Array, float64: Float64Array,
};

// A value as Python's serializer sent it -> as plotly.js takes it: {buffer, dtype, shape} (a 1-D
// numeric array) becomes a typed array (copied: a message's buffers need not be aligned), and
// "_undefined_" (a trace an update leaves alone) becomes undefined.
function unwire(value) {
  if (value === "_undefined_") return undefined;
  if (Array.isArray(value)) return value.map(unwire);
  if (value === null || typeof value !== "object") return value;
  if (value.buffer instanceof DataView && value.dtype in ARRAYS) {
    const view = value.buffer;
    return new ARRAYS[value.dtype](view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
  }
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, unwire(item)]));
}

// The points of a plotly.js click event, in the form plotly's Python side dispatches to on_click.
function points(event) {
  const picked = (event.points || []).flatMap((p) =>
    (p.pointNumbers || [p.pointNumber]).map((index) => ({ trace: p.curveNumber, index, x: p.x, y: p.y })));
  const input = event.event || {};
  return {
    event_type: "plotly_click",
    points: {
      trace_indexes: picked.map((p) => p.trace), point_indexes: picked.map((p) => p.index),
      xs: picked.map((p) => p.x), ys: picked.map((p) => p.y),
    },
    device_state: {
      alt: input.altKey, ctrl: input.ctrlKey, meta: input.metaKey, shift: input.shiftKey,
      button: input.button, buttons: input.buttons,
    },
    selector: null,
  };
}

// plotly.js calls for plotly's Python-side edit messages (message fields as basewidget.py names them)
const EDITS = {
  _py2js_update: (Plotly, el, m) => Plotly.update(el, unwire(m.style_data || {}), unwire(m.layout_data || {}), m.style_traces),
  _py2js_restyle: (Plotly, el, m) => Plotly.restyle(el, unwire(m.restyle_data), m.restyle_traces),
  _py2js_relayout: (Plotly, el, m) => Plotly.relayout(el, unwire(m.relayout_data)),
  _py2js_addTraces: (Plotly, el, m) => Plotly.addTraces(el, unwire(m.trace_data)),
  _py2js_deleteTraces: (Plotly, el, m) => Plotly.deleteTraces(el, m.delete_inds),
  _py2js_moveTraces: (Plotly, el, m) => Plotly.moveTraces(el, m.current_trace_inds, m.new_trace_inds),
  _py2js_animate: (Plotly, el, m) => Plotly.animate(
    el, { data: unwire(m.style_data), layout: unwire(m.layout_data), traces: m.style_traces }, m.animation_opts),
};

// What a drawn figure shows, as plain data a new plot can start from (plotly.js's own "_" keys left out).
function copy(value) {
  if (ArrayBuffer.isView(value)) return value.slice();
  if (Array.isArray(value)) return value.map(copy);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(Object.entries(value)
    .filter(([key, item]) => !key.startsWith("_") && typeof item !== "function")
    .map(([key, item]) => [key, copy(item)]));
}

// One per figure (anywidget calls the default export once per model): where a new view starts,
// and the edits since. The traits hold the figure as Python last sent it whole: every drawn view is
// drawn again from them when they change (plotly's Python side sends them again, one message each,
// just before a display, and the page can apply those after it drew a view from older ones). Edits that
// arrive while no view is drawn are kept and replayed, and a view that goes away leaves what it
// showed as the next start.
export default () => {
  const figure = { log: [], views: new Set() };
  return { initialize: ({ model }) => initialize(figure, model), render: ({ model, el }) => render(figure, model, el) };
};

function initialize(figure, model) {
  const fromTraits = () => {
    figure.start = () => Promise.resolve({
      data: unwire(model.get("_widget_data")), layout: unwire(model.get("_widget_layout")),
    });
    figure.log = [];
  };
  fromTraits();
  for (const name of ["_widget_data", "_widget_layout"]) {
    model.on(`change:${name}`, () => {
      fromTraits();
      for (const view of figure.views) view.draw(figure.start());
    });
  }
  for (const name of Object.keys(EDITS)) {
    model.on(`change:${name}`, () => {
      const message = model.get(name);
      if (message === null) return;
      if (figure.views.size === 0) figure.log.push([name, message]);
      for (const view of figure.views) view.edit(name, message);
    });
  }
}

function render(figure, model, el) {
  let Plotly; // plotly.js, once loaded: every use below waits for the first drawing
  const id = `vizattn-${Math.random().toString(36).slice(2)}`;
  let own = 1; // edits from Python (and the first drawing) still being applied: their events are not reported
  const settle = (step) => step.catch((error) => console.error("vizattn figure:", error)).finally(() => { own -= 1; });
  const other = [...figure.views][0]; // another view of this figure: start from what it shows
  const config = { ...model.get("_config"), editSelection: false };
  const whole = ({ data, layout }) => Plotly.react(el, data, { height: 360, ...layout }, config); // a first plot too
  let ready = settle(Promise.all([plotly(), other ? other.shown() : figure.start()]).then(([loaded, start]) => {
    Plotly = loaded;
    return whole(start);
  }));
  const view = {
    draw(start) { // the whole figure again, after what is being applied
      own += 1;
      ready = settle(ready.then(() => start).then(whole));
    },
    edit(name, message) {
      if (message.source_view_id === id) return;
      own += 1;
      ready = settle(ready.then(() => EDITS[name](Plotly, el, message)));
    },
    shown: () => ready.then(() => ({ data: copy(el.data), layout: copy(el.layout) })),
  };
  for (const [name, message] of figure.log.splice(0)) view.edit(name, message);
  figure.views.add(view);
  const report = (name, message) => {
    if (own > 0) return;
    model.set(name, { ...message, source_view_id: id });
    model.save_changes();
  };
  ready.then(() => {
    el.on("plotly_click", (event) => { model.set("_js2py_pointsCallback", points(event)); model.save_changes(); });
    el.on("plotly_relayout", (data) => report("_js2py_relayout", { relayout_data: data }));
    el.on("plotly_restyle", ([style_data, style_traces]) => report("_js2py_restyle", { style_data, style_traces }));
  });
  return () => {
    figure.views.delete(view);
    if (figure.views.size === 0) {
      const shown = view.shown();
      figure.start = () => shown;
      figure.log = [];
    }
    ready.then(() => Plotly.purge(el));
  };
}
