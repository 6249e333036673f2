// The Little Baby's page. Every number shown comes from the server, which computes it with the model's own
// NumPy layers (littlebaby/serve/inspect.py); this file only asks for it and draws it. Text from the model
// goes into the page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  run: null,          // the picked run's summary
  ids: [],            // every token id of the text in the output: the context, then the sampled ones
  nContext: 0,        // how many of them are the prompt (or the start token)
  settings: null,     // the sampling settings of the generation shown
  controller: null,   // aborts the generation's fetch: the Stop button
  map: null,          // the attention map of the prompt: {tokens, attention (L, NH, T, T)}
  layer: 0, head: 0,
};

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// a token as a readable label: newline, tab and space made visible
function shown(text) {
  return text.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5").replace(/ /g, "\u2423") || "\u2205";
}

const pct = (p) => (p >= 0.001 ? (100 * p).toFixed(1) + "%" : p > 0 ? p.toExponential(1) : "0");

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function setStatus(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// --- runs -------------------------------------------------------------------------------------------------

async function loadRuns() {
  const data = await api("/api/runs");
  $("out").textContent = "runs in " + data.out;
  const body = $("runs-table").querySelector("tbody");
  body.replaceChildren();
  const own = data.runs.filter((run) => !run.builtin);
  $("runs-empty").hidden = own.length > 0;
  const shipped = data.runs.find((run) => run.builtin);    // the pretrained baby: opened when there is nothing else
  let wanted = new URLSearchParams(location.search).get("run") || data.selected
    || (own.length === 0 && shipped ? shipped.guid : null);
  if (wanted && !data.runs.some((run) => run.guid === wanted)) {   // "last" or a prefix: the server resolves it
    wanted = await api("/api/runs/" + encodeURIComponent(wanted)).then((run) => run.guid, () => null);
  }
  for (const run of data.runs) {
    const row = runRow(run);
    body.append(row);
    if (run.guid === wanted) pickRun(run, row);
  }
}

function runRow(run) {
  if (run.error) {
    return el("tr", {class: "unusable"},
      [el("td", {text: run.guid.slice(0, 8)}), el("td", {colspan: 5, text: run.error})]);
  }
  const m = run.model, rep = run.report;
  const config = `${run.tokenizer.kind} V=${m.vocab_size} ctx=${m.n_ctx} emb=${m.n_emb} L=${m.n_layers} H=${m.n_heads}`
    + (run.parent ? ` from ${run.parent.slice(0, 8)}` : "");
  const steps = rep ? `${rep.steps}/${rep.planned_steps}` : "-";
  const val = rep && rep.final_val_loss != null ? rep.final_val_loss.toFixed(4) : "-";
  const spark = el("td");
  if (rep && rep.evals && rep.evals.length) spark.append(sparkline(rep.evals.map((e) => e.val_loss)));
  const row = el("tr", {title: run.guid, "data-guid": run.guid}, [
    el("td", {class: "mono", text: run.builtin ? "pretrained (built-in)"
      : run.guid.slice(0, 8) + (run.guid.endsWith("_finetuned") ? "_finetuned" : "")}),
    el("td", {text: run.created.slice(0, 19).replace("T", " ")}), el("td", {text: config}),
    el("td", {text: steps}), el("td", {text: val + (run.has_model ? "" : " (no model yet)")}), spark]);
  if (!run.has_model) row.classList.add("unusable");
  row.addEventListener("click", () => pickRun(run, row));
  return row;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function sparkline(values) {
  const root = svg("svg", {width: 90, height: 22, viewBox: "0 0 90 22"});
  root.append(svg("polyline", {points: points(values.map((v, i) => [i, v]), 90, 22, 2), fill: "none",
    stroke: "#e0662f", "stroke-width": 1.5}));
  return root;
}

// [[x, y]] -> "x,y ..." scaled into a width x height box with a margin (y grows downwards)
function points(xy, width, height, margin, box = bounds(xy)) {
  const sx = (width - 2 * margin) / (box.x1 - box.x0 || 1), sy = (height - 2 * margin) / (box.y1 - box.y0 || 1);
  return xy.filter(([, y]) => y != null)
    .map(([x, y]) => `${(margin + (x - box.x0) * sx).toFixed(1)},${(height - margin - (y - box.y0) * sy).toFixed(1)}`)
    .join(" ");
}

function bounds(xy) {
  const xs = xy.map((p) => p[0]), ys = xy.map((p) => p[1]).filter((y) => y != null);
  return {x0: Math.min(...xs), x1: Math.max(...xs), y0: Math.min(...ys), y1: Math.max(...ys)};
}

async function pickRun(run, row) {
  if (run.error || !run.has_model) {
    setStatus($("gen-status"), run.error || `run ${run.guid} has no model yet`, true);
    return;
  }
  document.querySelectorAll("#runs-table tr.selected").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  state.run = run;
  history.replaceState(null, "", "?run=" + encodeURIComponent(run.guid));
  $("generate").disabled = false;
  $("map-prompt").disabled = false;
  setStatus($("gen-status"), `run ${run.guid} picked: write a prompt and generate.`);
  const detail = await api("/api/runs/" + encodeURIComponent(run.guid));
  drawLossCurve(detail.report);
  drawConfig(detail);
  $("run-detail").hidden = false;
}

function drawLossCurve(report) {
  const root = $("loss-curve");
  root.replaceChildren();
  if (!report || !report.loss || !report.loss.length) {
    const note = svg("text", {x: 20, y: 40});
    note.textContent = "no report yet";
    root.append(note);
    return;
  }
  const W = 640, H = 260, M = 34;
  const batch = report.loss.map((v, i) => [i + 1, v]);
  const train = report.evals.map((e) => [e.step, e.train_loss]), val = report.evals.map((e) => [e.step, e.val_loss]);
  const box = bounds(batch.concat(train, val));
  root.append(svg("polyline",
    {points: points(batch, W, H, M, box), fill: "none", stroke: "#2f6fd6", "stroke-opacity": 0.3}));
  for (const [series, color] of [[train, "#2f6fd6"], [val, "#e0662f"]]) {
    root.append(svg("polyline",
      {points: points(series, W, H, M, box), fill: "none", stroke: color, "stroke-width": 2}));
  }
  const label = (x, y, text, anchor = "start", fill = "#687086") => {
    const t = svg("text", {x, y, "font-size": 11, fill, "text-anchor": anchor});
    t.textContent = text;
    root.append(t);
  };
  label(4, M, box.y1.toFixed(2));
  label(4, H - M, box.y0.toFixed(2));
  label(M, H - 10, "step " + box.x0);
  label(W - M, H - 10, "step " + box.x1, "end");
  label(W - M - 150, 16, "train (batch)", "end", "#9db7e6");
  label(W - M - 40, 16, "train (eval)", "end", "#2f6fd6");
  label(W - M, 16, "val", "end", "#e0662f");
}

function drawConfig(detail) {
  const list = $("run-config");
  list.replaceChildren();
  const rows = {guid: detail.guid, kind: detail.kind, created: detail.created, tokenizer: detail.tokenizer.kind,
    ...detail.model, steps: detail.plan ? detail.plan.steps : "-", data: detail.data ? detail.data.source : "-"};
  if (detail.report) {
    Object.assign(rows, {parameters: detail.report.num_params, "val loss": detail.report.final_val_loss});
  }
  const format = (v) => (typeof v === "number" && !Number.isInteger(v) ? String(+v.toPrecision(4)) : String(v));
  for (const [key, value] of Object.entries(rows)) list.append(el("dt", {text: key}), el("dd", {text: format(value)}));
}

// --- playground ---------------------------------------------------------------------------------------------

function numberOrNull(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

function readSettings() {
  return {prompt: $("prompt").value, max_tokens: numberOrNull("max-tokens"),
    temperature: numberOrNull("temperature") ?? 1,
    top_k: numberOrNull("top-k"), top_p: numberOrNull("top-p"), seed: numberOrNull("seed")};
}

function tokenChip(token, i, kind) {
  const chip = el("span", {class: "tok " + kind, "data-i": i, title: `#${i} id ${token.id}`});
  if (kind === "start") chip.textContent = "\u21b5(start)";
  else if (token.text === "\n") { chip.textContent = "\u21b5\n"; chip.classList.add("nl"); }
  else chip.textContent = token.text;
  return chip;
}

async function generate(event) {
  event.preventDefault();
  if (!state.run) return;
  const settings = readSettings();
  const output = $("output");
  state.controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  setStatus($("gen-status"), "generating...");
  let sampled = 0;
  try {
    const response = await fetch(`/api/runs/${encodeURIComponent(state.run.guid)}/generate`, {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(settings), signal: state.controller.signal});
    if (!response.ok) throw new Error((await response.json()).error || response.statusText);
    for await (const [name, data] of serverEvents(response)) {
      if (name === "start") {
        state.ids = data.tokens.map((t) => t.id);
        state.nContext = data.tokens.length;
        state.settings = {temperature: settings.temperature, top_k: settings.top_k, top_p: settings.top_p};
        output.replaceChildren(...data.tokens.map((t, i) => tokenChip(t, i, data.start_token ? "start" : "prompt")));
        $("seed").value = data.seed;
        $("why-body").hidden = true;
        mapPrompt();
      } else if (name === "token") {
        state.ids.push(data.id);
        output.append(tokenChip(data, data.i, "sampled"));
        sampled += 1;
        if (sampled % 20 === 0) setStatus($("gen-status"), `generating... ${sampled} tokens`);
      } else if (name === "done") {
        setStatus($("gen-status"), `done: ${sampled} tokens, ${Math.round(data.tokens_per_s)} tokens/s, `
          + `seed ${$("seed").value}; `
          + `saved as outputs/${data.saved}. Click a token to see why it came out.`);
      } else if (name === "stopped" || name === "error") {
        setStatus($("gen-status"), `${name}: ${data.message}`, name === "error");
      }
    }
  } catch (error) {
    if (error.name === "AbortError") setStatus($("gen-status"), `stopped after ${sampled} tokens (nothing saved).`);
    else setStatus($("gen-status"), String(error.message || error), true);
  } finally {
    state.controller = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

// server-sent events from a fetch response: yields [event name, parsed data]
async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield [name, JSON.parse(data)];
    }
  }
}

// --- why this token -----------------------------------------------------------------------------------------

async function explain(chip) {
  const i = Number(chip.dataset.i);
  if (!state.run || i < 1) {
    setStatus($("why-hint"), "The first token has nothing before it: click a later one.");
    return;
  }
  document.querySelectorAll(".tok.selected").forEach((c) => c.classList.remove("selected"));
  chip.classList.add("selected");
  try {
    const data = await api(`/api/runs/${encodeURIComponent(state.run.guid)}/inspect`,
      {ids: state.ids, position: i, ...state.settings});
    drawExplanation(data, i >= state.nContext);
  } catch (error) {
    setStatus($("why-hint"), String(error.message || error), true);
  }
}

function drawExplanation(data, wasSampled) {
  const token = shown(data.token.text);
  $("why-title").textContent = `token #${data.position} "${token}" (id ${data.token.id}), `
    + (wasSampled ? "sampled" : "part of the prompt, not sampled")
    + `; predicted from the ${data.context.length} tokens before it`
    + (data.window > 0 ? ` (tokens ${data.window}..${data.position - 1}: the context window)` : "");
  drawBars($("dist-sampled"), $("dist-sampled-note"), data.sampled, data.token.id);
  drawBars($("dist-raw"), $("dist-raw-note"), data.raw, data.token.id);
  drawStrips(data);
  drawLens(data);
  $("why-hint").hidden = true;
  $("why-body").hidden = false;
}

function drawBars(list, note, dist, chosen) {
  list.replaceChildren(...dist.top.map((entry) => el("li", {class: entry.id === chosen ? "chosen" : ""}, [
    el("span", {text: shown(entry.text)}), el("span", {class: "bar", style: `width: ${100 * entry.p}%`}),
    el("span", {class: "p", text: pct(entry.p)})])));
  note.textContent = `this token: ${pct(dist.p_token)}, rank ${dist.rank}`;
}

function drawStrips(data) {
  const box = $("why-attention");
  box.replaceChildren();
  data.attention.forEach((heads, layer) => heads.forEach((weights, head) => {
    const most = Math.max(...weights);
    const cells = data.context.map((t, s) => el("span", {class: "cell", text: shown(t.text),
      title: `layer ${layer} head ${head}: weight ${weights[s].toFixed(4)} on #${data.window + s} "${shown(t.text)}"`,
      style: `background: rgba(224, 102, 47, ${(weights[s] / most).toFixed(3)})`}));
    box.append(el("div", {class: "strip"}, [el("span", {class: "name", text: `L${layer} H${head}`}), ...cells]));
  }));
}

function drawLens(data) {
  const body = $("lens").querySelector("tbody");
  body.replaceChildren(...data.lens.map((row) => el("tr", {}, [
    el("td", {text: row.layer}),
    el("td", {class: "top"}, row.top.map((e) => el("span", {class: e.id === data.token.id ? "chosen" : "",
      text: `${shown(e.text)} ${pct(e.p)}`}))),
    el("td", {text: pct(row.p_token)}), el("td", {text: String(row.rank)})])));
}

// --- attention map of the prompt ----------------------------------------------------------------------------

async function mapPrompt() {
  if (!state.run) return;
  try {
    state.map = await api(`/api/runs/${encodeURIComponent(state.run.guid)}/attention`, {prompt: $("prompt").value});
  } catch (error) {
    setStatus($("map-status"), String(error.message || error), true);
    return;
  }
  const L = state.map.attention.length, NH = state.map.attention[0].length;
  state.layer = Math.min(state.layer, L - 1);
  state.head = Math.min(state.head, NH - 1);
  switches($("map-layers"), L, "layer");
  switches($("map-heads"), NH, "head");
  const T = state.map.tokens.length;
  setStatus($("map-status"), `${T} tokens` + (state.map.cropped ? ` (the last ${T}: `
    + `the first ${state.map.cropped} are outside the context window)` : "")
    + ". Row t: how position t spreads its attention over positions 0..t, darkest where it looks most.");
  drawMap();
}

function switches(box, n, key) {
  box.replaceChildren(...Array.from({length: n}, (_, i) => {
    const button = el("button",
      {type: "button", class: i === state[key] ? "on" : "", "data-index": i, text: String(i)});
    button.addEventListener("click", () => { state[key] = i; switches(box, n, key); drawMap(); });
    return button;
  }));
}

function drawMap() {
  const canvas = $("att-canvas"), map = state.map;
  const weights = map.attention[state.layer][state.head], T = map.tokens.length;
  const label = 28, cell = Math.max(4, Math.min(24, Math.floor((canvas.width - label) / T)));
  const ctx = canvas.getContext("2d");
  canvas.height = label + cell * T;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = `${Math.min(12, cell)}px monospace`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillStyle = "#687086";
  map.tokens.forEach((t, i) => {
    const text = shown(t.text).slice(0, 2);
    ctx.fillText(text, label + (i + 0.5) * cell, label / 2);   // keys along the top
    ctx.fillText(text, label / 2, label + (i + 0.5) * cell);   // queries down the side
  });
  for (let q = 0; q < T; q++) {
    const most = Math.max(...weights[q].slice(0, q + 1));   // each row shaded relative to its largest weight
    for (let k = 0; k <= q; k++) {
      ctx.fillStyle = `rgba(47, 111, 214, ${(weights[q][k] / most).toFixed(3)})`;
      ctx.fillRect(label + k * cell, label + q * cell, cell - 1, cell - 1);
    }
  }
  canvas.dataset.cell = cell;
  canvas.dataset.label = label;
  canvas.hidden = false;
}

function hoverMap(event) {
  if (!state.map) return;
  const canvas = $("att-canvas"), rect = canvas.getBoundingClientRect();
  const scale = canvas.width / rect.width, cell = Number(canvas.dataset.cell), label = Number(canvas.dataset.label);
  const k = Math.floor(((event.clientX - rect.left) * scale - label) / cell);
  const q = Math.floor(((event.clientY - rect.top) * scale - label) / cell);
  const tokens = state.map.tokens;
  if (q < 0 || k < 0 || q >= tokens.length || k > q) { $("map-hover").textContent = ""; return; }
  const w = state.map.attention[state.layer][state.head][q][k];
  $("map-hover").textContent = `layer ${state.layer} head ${state.head}: position ${q} "${shown(tokens[q].text)}" `
    + `gives ${pct(w)} of its attention to position ${k} "${shown(tokens[k].text)}"`;
}

// --- wiring -------------------------------------------------------------------------------------------------

$("gen-form").addEventListener("submit", generate);
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("output").addEventListener("click", (event) => {
  const chip = event.target.closest(".tok");
  if (chip) explain(chip);
});
$("map-prompt").addEventListener("click", mapPrompt);
$("att-canvas").addEventListener("mousemove", hoverMap);
loadRuns().catch((error) => setStatus($("gen-status"), "cannot list the runs: " + (error.message || error), true));
