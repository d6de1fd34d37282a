// Building the page from data without ever parsing it as HTML.
//
// Every string that reaches the page here becomes a Text node or an attribute
// value set with setAttribute: node names, workload commands, log lines and
// error messages come from other machines and users, and are never markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  return el;
}

/** An HTML element: h("td", {class: "num"}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

/** An SVG element, like h(). */
export function s(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** Replace everything inside `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function fmt(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

export function age(seconds) {
  if (typeof seconds !== "number") return "–";
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** A box with an error: its message and, for a policy, every problem. */
export function errorBox(err) {
  const problems = (err && err.problems) || [];
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, err && err.code ? `${err.code}: ` : "error: "),
    err && err.message ? err.message : String(err),
    problems.length ? h("ul", {}, problems.map((p) => h("li", {}, typeof p === "string" ? p : JSON.stringify(p)))) : null);
}

/** Run `fn` now and every `ms` while started; stop() ends it. One call at a time. */
export function poller(fn, ms) {
  let timer = null;
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try { await fn(); } finally { running = false; }
  };
  return {
    start() { if (timer === null) { tick(); timer = setInterval(tick, ms); } },
    stop() { if (timer !== null) { clearInterval(timer); timer = null; } },
    now: tick,
  };
}
