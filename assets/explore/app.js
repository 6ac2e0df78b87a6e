// The explorer's page: plain JavaScript over the JSON API (see `GET /api`). Nothing is fetched
// but the API, so the page works offline.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { info: null, lastForward: null, generation: null, attentionCalls: 0 };

async function api(route, body) {
  const response = await fetch(route, body === undefined ? {} : {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const value = await response.json();
  if (!response.ok) throw new Error(value.error || response.statusText);
  return value;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function model(name) {
  return state.info.models.find((m) => m.name === name);
}

// `text` cut to at most `length` characters, or, when the causal model does not know all of
// them, its vocabulary's first characters instead.
function fitted(text, length) {
  const known = new Set(model("causal").vocabulary);
  let chars = Array.from(text);
  if (!chars.every((c) => known.has(c))) chars = model("causal").vocabulary.slice(0, 12);
  return chars.slice(0, length).join("");
}

const shown = (text) => text.replace(/ /g, "␣").replace(/\n/g, "⏎");

// ---- tabs ---------------------------------------------------------------------------------

// The open tab is the address's fragment (`/#attention`), so a view can be linked to.
function openTab(name) {
  const button = document.querySelector(`#tabs button[data-tab="${name}"]`);
  if (!button) return;
  for (const other of document.querySelectorAll("#tabs button")) other.classList.remove("active");
  for (const tab of document.querySelectorAll(".tab")) tab.classList.remove("active");
  button.classList.add("active");
  $("#" + name).classList.add("active");
}

for (const button of document.querySelectorAll("#tabs button")) {
  button.addEventListener("click", () => {
    history.replaceState(null, "", "#" + button.dataset.tab);
    openTab(button.dataset.tab);
  });
}
openTab(location.hash.slice(1));
window.addEventListener("hashchange", () => openTab(location.hash.slice(1)));

// ---- generate -----------------------------------------------------------------------------

function drawBars(container, top) {
  container.replaceChildren(...top.map(([text, p]) => el("div", { class: "bar-row" },
    el("span", { class: "bar-label", text: shown(text) }),
    el("span", { class: "track" }, el("span", { class: "bar", style: `width: ${(100 * p).toFixed(1)}%` })),
    el("span", { class: "bar-value", text: p.toFixed(3) }))));
}

function addStep(token) {
  const body = $("#steps tbody");
  const diff = token.naive_diff === null ? "" : token.naive_diff.toExponential(1);
  body.append(el("tr", { class: token.phase },
    el("td", { text: token.step }), el("td", { text: shown(token.text) }),
    el("td", { text: token.phase }), el("td", { class: "cache-len", text: token.cache_len }),
    el("td", { text: token.cache_bytes.toLocaleString() }), el("td", { text: diff })));
  body.parentElement.parentElement.scrollTop = body.parentElement.scrollHeight;
}

// Server-sent events over a POST: read the body as it arrives and split it into events.
async function stream(route, request, onEvent, signal) {
  const response = await fetch(route, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify(request), signal,
  });
  if (!response.ok) throw new Error((await response.json()).error || response.statusText);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

function numberOrNull(selector) {
  const value = $(selector).value.trim();
  return value === "" ? null : Number(value);
}

async function generate() {
  const controller = new AbortController();
  state.generation = controller;
  $("#generate-button").disabled = true;
  $("#stop-button").disabled = false;
  $("#steps tbody").replaceChildren();
  const prompt = $("#prompt").value;
  const output = $("#output");
  output.replaceChildren(el("span", { class: "prompt", text: prompt }));
  output.dataset.done = "false";
  const request = {
    model: $("#gen-model").value, prompt,
    temperature: Number($("#temperature").value), top_k: numberOrNull("#top-k"),
    top_p: numberOrNull("#top-p"), seed: Number($("#seed").value),
    max_new_tokens: Number($("#max-new").value), verify: $("#verify").checked,
    window: $("#window").value,
  };
  $("#status").textContent = "streaming…";
  const started = performance.now();
  try {
    await stream("/api/generate", request, (event, data) => {
      if (event === "token") {
        output.append(el("span", { class: "token " + data.phase, text: data.text, "data-step": data.step }));
        drawBars($("#top-bars"), data.top);
        $("#bars-step").textContent = `(step ${data.step}, ${data.phase})`;
        addStep(data);
      } else if (event === "done") {
        const seconds = (performance.now() - started) / 1000;
        $("#status").textContent = `done: ${data.tokens} tokens, ${data.mode} decoding at ` +
          `${Math.round(data.decode_tokens_per_s)} tokens/s on the server (${seconds.toFixed(2)} s here)` +
          (data.mode === "naive" ? "; this model's mask leaks, so its KV cache is not valid" : "");
        output.dataset.done = "true";
        output.dataset.text = data.text;
        output.dataset.decodeTokensPerS = String(data.decode_tokens_per_s);
        // The attention view follows: the generated text's last context, drawn now.
        $("#attn-model").value = $("#gen-model").value;
        $("#attn-text").value = lastContext(prompt + data.text, $("#gen-model").value);
        showAttention();
      } else if (event === "error") {
        $("#status").textContent = "error: " + data;
      }
    }, controller.signal);
  } catch (error) {
    $("#status").textContent = controller.signal.aborted ? "stopped" : "error: " + error.message;
  } finally {
    $("#generate-button").disabled = false;
    $("#stop-button").disabled = true;
  }
}

function lastContext(text, name) {
  const chars = Array.from(text);
  return chars.slice(Math.max(0, chars.length - model(name).max_seq_len)).join("");
}

// The rolling window needs rotary positions: offered only for a model that has them.
function updateWindows() {
  const rope = model($("#gen-model").value).position === "rope";
  const rolling = $("#window option[value=rolling]");
  rolling.disabled = !rope;
  if (!rope && $("#window").value === "rolling") $("#window").value = "slide-half";
}

$("#generate-button").addEventListener("click", generate);
$("#gen-model").addEventListener("change", updateWindows);
$("#stop-button").addEventListener("click", () => state.generation && state.generation.abort());

// ---- attention ----------------------------------------------------------------------------

// Which keys a query may not see under a mask: drawn hatched (their weight is exactly 0).
function masked(mask, query, key) {
  switch (mask) {
    case "causal": case "after-softmax": return key > query;
    case "flipped": return key < query;
    case "off-by-one": return key > query + 1;
    default: return false;
  }
}

function heatmap(weights, tokens, mask, title) {
  const size = weights.length;
  const grid = el("div", { class: "grid" + (size <= 16 ? " large" : ""), style: `grid-template-columns: repeat(${size}, 1fr)` });
  for (let q = 0; q < size; q++) {
    for (let k = 0; k < size; k++) {
      const w = weights[q][k];
      const cell = el("div", { class: "cell", "data-w": String(w), "data-q": q, "data-k": k });
      if (masked(mask, q, k)) {
        cell.classList.add("masked");
        cell.textContent = "0";
      } else {
        cell.style.background = `rgba(37, 99, 235, ${Math.sqrt(w)})`;
      }
      if (q === size - 1) cell.classList.add("newest");
      grid.append(cell);
    }
  }
  grid.addEventListener("mousemove", (event) => {
    const cell = event.target.closest(".cell");
    const tip = $("#tooltip");
    if (!cell) { tip.hidden = true; return; }
    const q = Number(cell.dataset.q), k = Number(cell.dataset.k);
    tip.textContent = `${title}: query ${q} '${shown(tokens[q])}' → key ${k} '${shown(tokens[k])}': ` +
      Number(cell.dataset.w).toFixed(4) + (cell.classList.contains("masked") ? " (masked)" : "");
    tip.style.left = event.pageX + 12 + "px";
    tip.style.top = event.pageY + 12 + "px";
    tip.hidden = false;
  });
  grid.addEventListener("mouseleave", () => { $("#tooltip").hidden = true; });
  if (size > 32) return el("figure", { class: "head" }, el("figcaption", { text: title }), grid);
  // Keys along the top, queries down the side.
  const axis = (name) => el("div", { class: "axis " + name + (size > 16 ? " small" : ""), style: `--n: ${size}` },
    ...tokens.map((piece) => el("span", { text: shown(piece) })));
  return el("figure", { class: "head" }, el("figcaption", { text: title }),
    el("div", { class: "labelled" }, el("span", { class: "corner" }), axis("keys"), axis("queries"), grid));
}

async function showAttention() {
  const name = $("#attn-model").value;
  const info = model(name);
  const text = $("#attn-text").value;
  const call = ++state.attentionCalls;
  delete $("#heatmaps").dataset.text;
  try {
    const result = await api("/api/forward", { model: name, text });
    if (call !== state.attentionCalls) return; // a later call draws instead
    state.lastForward = { model: name, result };
    const pieces = result.tokens.pieces;
    const rows = result.layers.map((layer) => el("div", { class: "layer" },
      el("h3", { text: layer.name }),
      el("div", { class: "heads" }, ...layer.weights.map((weights, h) =>
        heatmap(weights, pieces, info.mask, `${layer.name} head ${h}`)))));
    $("#heatmaps").replaceChildren(...rows);
    $("#heatmaps").dataset.text = text;
    $("#gqa").textContent = groups(info);
    drawShapes();
  } catch (error) {
    if (call !== state.attentionCalls) return;
    $("#heatmaps").replaceChildren(el("p", { class: "error", text: error.message }));
  }
}

function groups(info) {
  if (info.n_kv_heads === info.n_heads) return `${info.n_heads} heads, each with its own keys and values (multi-head attention).`;
  const per = info.n_heads / info.n_kv_heads;
  const parts = [];
  for (let g = 0; g < info.n_kv_heads; g++) {
    const heads = Array.from({ length: per }, (_, i) => g * per + i);
    parts.push(`query heads ${heads.join(", ")} share key/value head ${g}`);
  }
  return `Grouped-query attention: ${parts.join("; ")}.`;
}

$("#attn-button").addEventListener("click", showAttention);
$("#attn-model").addEventListener("change", () => { $("#gqa").textContent = groups(model($("#attn-model").value)); });

// ---- shapes -------------------------------------------------------------------------------

function drawShapes() {
  if (!state.lastForward) return;
  const info = model(state.lastForward.model);
  $("#shapes-model").textContent = `${state.lastForward.model} model, the last forward pass: ` +
    `B=1, T=${state.lastForward.result.tokens.ids.length}, D=${info.d_model}, H=${info.n_heads}, ` +
    `H_kv=${info.n_kv_heads}, Dh=${info.head_dim}, L=${info.n_layers}, V=${info.vocabulary.length}`;
  $("#shapes-table tbody").replaceChildren(...state.lastForward.result.stages.map((stage) =>
    el("tr", {}, el("td", { text: stage.name }), el("td", { class: "shape", text: `[${stage.shape.join(", ")}]` }))));
}

// ---- the leak -----------------------------------------------------------------------------

function figure(label, value, note) {
  return el("div", { class: "figure" }, el("span", { class: "label", text: label }),
    el("span", { class: "value", text: value }), note ? el("span", { class: "muted", text: note }) : "");
}

async function measureLeak() {
  for (const side of ["causal", "leaky"]) $(`#leak-${side} .figures`).replaceChildren(el("p", { class: "muted", text: "measuring…" }));
  try {
    const result = await api("/api/leak", { text: $("#leak-text").value });
    for (const side of ["causal", "leaky"]) {
      const r = result[side];
      $(`#leak-${side} h3`).textContent = `${side} (${r.mask} mask)`;
      $(`#leak-${side} .figures`).replaceChildren(
        figure("teacher-forced loss", r.teacher_forced_loss.toFixed(3), "the whole text as input"),
        figure("honest loss", r.honest_loss.toFixed(3), "each token from the tokens before it only"),
        figure("causality probe", `${r.probe_violations} / ${r.probe_positions}`, "positions whose change moved an earlier logit"),
        el("p", { class: "label", text: "its continuation (greedy, full recompute):" }),
        el("pre", { class: "sample", text: $("#leak-text").value + r.generation }));
    }
  } catch (error) {
    $("#leak-causal .figures").replaceChildren(el("p", { class: "error", text: error.message }));
    $("#leak-leaky .figures").replaceChildren();
  }
}

async function probe(name) {
  const request = { model: name, text: $("#leak-text").value, position: Number($("#probe-position").value) };
  const replacement = $("#probe-char").value;
  if (replacement) request.replacement = replacement;
  try {
    const result = await api("/api/probe", request);
    const pieces = Array.from(result.changed_text);
    // A log scale from the tolerance up: a leak far smaller than the changed position's own
    // movement still shows, and a position that did not move has no bar.
    const largest = Math.max(...result.moved, result.tolerance * 10);
    const height = (moved) => moved <= result.tolerance ? 0 :
      100 * Math.log(moved / result.tolerance) / Math.log(largest / result.tolerance);
    $("#probe-bars").replaceChildren(...result.moved.map((moved, t) => el("div", {
      class: "column" + (t < result.position ? " before" : "") + (t === result.position ? " changed" : "") +
        (t < result.position && moved > result.tolerance ? " leaked" : ""),
      title: `position ${t} '${shown(pieces[t])}': max |Δ logit| ${moved.toExponential(2)}`,
      "data-moved": String(moved),
    }, el("span", { class: "fill", style: `height: ${height(moved).toFixed(1)}%` }),
      el("span", { class: "tick", text: shown(pieces[t]) }))));
    $("#probe-summary").dataset.earlierMoved = String(result.earlier_moved);
    $("#probe-summary").textContent = `${name}: changing position ${result.position} moved the ` +
      `predictions of ${result.earlier_moved} of the ${result.position} positions before it ` +
      `(by more than ${result.tolerance}).` + (result.earlier_moved > 0 ? " They saw the future." : " None saw the future.") +
      ` Bars: max |Δ logit| at each position, log scale from ${result.tolerance} to ${largest.toExponential(1)}.`;
  } catch (error) {
    $("#probe-summary").textContent = "error: " + error.message;
  }
}

$("#leak-button").addEventListener("click", measureLeak);
$("#probe-causal").addEventListener("click", () => probe("causal"));
$("#probe-leaky").addEventListener("click", () => probe("leaky"));

// ---- failure gallery ----------------------------------------------------------------------

async function plantFault() {
  const box = $("#fault-result");
  box.replaceChildren(el("p", { class: "muted", text: "planting…" }));
  delete box.dataset.fault;
  try {
    // The server fits the prompt and the decode steps to the model (see `POST /api/fault`).
    const r = await api("/api/fault", { fault: $("#fault-select").value });
    const parts = [
      figure("symptom", r.symptom), figure("inspect first", r.inspect), figure("caught by", r.caught_by),
      el("p", { class: "muted", text: `Planted into the causal model, on the prompt '${shown(r.prompt)}'` +
        (r.parted ? `, then ${r.decode} tokens decoded both ways.` : ".") }),
    ];
    if (r.refused) parts.push(el("p", { class: "label", text: "the crate refuses the call:" }), el("pre", { class: "error", text: r.refused }));
    if (r.probed) parts.push(figure("causality probe", `${r.probed[0]} / ${r.probed[1]} positions see the future`, `max |Δ logit| ${r.probed[2].toFixed(3)}`));
    if (r.parted) {
      const p = r.parted;
      parts.push(figure("cached and naive decoding part", p.first_step === null ? "never" : `at step ${p.first_step}`,
        p.first_step === null ? "" : `max |Δ logit| ${p.max_abs_diff.toFixed(3)}`));
      parts.push(el("table", { class: "lens" },
        el("tr", {}, el("th", { text: "cache length" }), ...p.cache_lens.map((n, i) => el("td", { class: n === p.expected_cache_lens[i] ? "" : "wrong", text: n }))),
        el("tr", {}, el("th", { text: "expected" }), ...p.expected_cache_lens.map((n) => el("td", { text: n })))));
      parts.push(el("p", { class: "label", text: "naive (␣ is a space):" }), el("pre", { class: "sample", text: shown(p.naive) }),
        el("p", { class: "label", text: "cached:" }), el("pre", { class: "sample", text: shown(p.cached) }));
    }
    box.replaceChildren(...parts);
    box.dataset.fault = r.name;
  } catch (error) {
    box.replaceChildren(el("p", { class: "error", text: error.message }));
  }
}

$("#fault-button").addEventListener("click", plantFault);

// ---- start --------------------------------------------------------------------------------

(async function start() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    $("#models").textContent = "error: " + error.message;
    return;
  }
  const describe = (m) => `${m.name}: ${m.mask} mask, D=${m.d_model} H=${m.n_heads} H_kv=${m.n_kv_heads} ` +
    `L=${m.n_layers}, context ${m.max_seq_len}, ${m.position} positions, step ${m.step}`;
  $("#models").textContent = state.info.models.map(describe).join(" · ");
  for (const select of ["#gen-model", "#attn-model"]) {
    $(select).replaceChildren(...state.info.models.map((m) => el("option", { value: m.name, text: m.name })));
  }
  $("#fault-select").replaceChildren(...state.info.exhibits.map((name) => el("option", { value: name, text: name })));
  $("#gqa").textContent = groups(model("causal"));
  updateWindows();
  if (!model("leaky")) {
    for (const id of ["#leak-button", "#probe-leaky"]) $(id).disabled = true;
    $("#probe-summary").textContent = "No leaky model is loaded (start the explorer with --leaky DIR).";
  }
  // Defaults the model can read: texts made of its own characters, no longer than its
  // context (the attention view and the probe take at most a context of text).
  const context = model("causal").max_seq_len;
  $("#attn-text").value = fitted($("#attn-text").value, context);
  $("#leak-text").value = fitted($("#leak-text").value, context);
  $("#prompt").value = fitted($("#prompt").value, 4000);
  const position = $("#probe-position");
  position.max = context - 1;
  position.value = Math.min(Number(position.value), Math.floor(Array.from($("#leak-text").value).length / 2));
  // The attention and shape views start with the default text's forward pass, not empty.
  await showAttention();
  document.body.dataset.ready = "true";
})();
