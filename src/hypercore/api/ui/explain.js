// One placement decision, drawn: ranked nodes with their score's parts as bars,
// rejected nodes with their reasons. Used by Decisions and the playground.
import { fmt, h } from "./dom.js";

// The default metric registry's score components (src/hypercore/policy/registry.py), for the legend;
// a decision's own are the keys of its components.
export const COMPONENTS = ["latency", "price", "reputation", "queue"];

function bars(ranked, scale) {
  const components = Object.keys(ranked.components);
  const bar = h("div", { class: "bar", role: "img",
    "aria-label": components.map((c) => `${c} ${fmt(ranked.components[c], 3)}`).join(", ") });
  for (const c of components) {
    const value = Number(ranked.components[c]) || 0;
    const part = h("span", { class: `part ${c}`, title: `${c}: ${fmt(value, 3)}` });
    part.style.width = `${Math.max(0, Math.min(100, (100 * value) / scale))}%`; // CSSOM, which the CSP allows
    bar.append(part);
  }
  return bar;
}

export function legend() {
  return h("p", { class: "legend small" }, COMPONENTS.map((c) => [h("i", { class: `swatch ${c}` }), c, " "]));
}

/** The link a ranked node was scored with, as GET /v1/nodes?near= reports it (the playground passes them). */
function linkLine(node, links) {
  const link = links && links.nodes instanceof Map ? links.nodes.get(node) : undefined;
  if (!link) return null;
  const source = typeof link.link_source === "string" ? link.link_source : "unknown";
  return h("div", { class: "link small", "data-source": source },
    `latency ${fmt(link.latency_ms)} ms, jitter ${fmt(link.jitter_ms)} ms, loss ${fmt(link.packet_loss)} % `
    + `from ${links.origin} (${source})`);
}

export function rankedList(ranked, links = null) {
  if (!ranked.length) return h("p", { class: "muted" }, "No node ranks.");
  const scale = Math.max(1, ...ranked.map((r) => Number(r.score) || 0));
  return h("ol", { class: "ranked" }, ranked.map((r) => h("li", { "data-node": r.node },
    h("div", { class: "rank-head" }, h("strong", {}, r.node), h("span", { class: "num" }, `score ${fmt(r.score, 3)}`)),
    bars(r, scale),
    h("div", { class: "muted small" },
      Object.keys(r.components).map((c) => `${c} ${fmt(r.components[c], 3)}`).join(" · ")),
    linkLine(r.node, links))));
}

export function rejectedList(rejected, total) {
  if (!rejected.length) return null;
  const more = total && total > rejected.length ? ` (first ${rejected.length} of ${total})` : "";
  return h("details", { class: "rejected", open: rejected.length <= 5 },
    h("summary", {}, `Rejected: ${total || rejected.length}${more}`),
    h("ul", {}, rejected.map((r) => h("li", { "data-node": r.node }, h("strong", {}, r.node), " — ",
      (r.reasons || []).join("; ")))));
}

function originNote(links) {
  // links.py: jitter and loss always come from the answering node's own probes (an observer other than the candidate).
  return links.origin === links.self
    ? h("p", { class: "small origin" }, "Latency, jitter and loss as seen from ", h("strong", {}, links.origin),
      " (this node).")
    : h("p", { class: "small origin" }, "Latency as seen from ", h("strong", {}, links.origin),
      "; jitter and loss as this node (", links.self, ") measured them.");
}

/** A decision; `links` ({origin, self, nodes: Map name → /v1/nodes record}): the links it was scored with. */
export function decisionView(decision, links = null) {
  return h("div", { class: "decision" },
    h("p", {}, h("span", { class: "tag" }, `policy ${decision.policy}`), " ", h("span", { class: "tag" }, decision.mode),
      decision.fallback ? [" ", h("span", { class: "tag warn" }, "permissive fallback")] : null),
    h("p", { class: "summary" }, decision.summary),
    legend(),
    links ? originNote(links) : null,
    rankedList(decision.ranked || [], links),
    rejectedList(decision.rejected || [], decision.rejected_total));
}
