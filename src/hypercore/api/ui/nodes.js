// Nodes: every member as this node sees it (GET /v1/nodes, public), on a map and in a table.
import { api } from "./api.js";
import { errorBox, fill, fmt, h, poller } from "./dom.js";
import { drawMap, NO_REGION, regionOf, statusClass } from "./map.js";

const $ = (id) => document.getElementById(id);

function reputation(node) {
  if (node.reputation === null || node.reputation === undefined) return "–";
  const ev = node.reputation_evidence || {};
  return h("span", {}, fmt(node.reputation, 3),
    h("span", { class: "muted small evidence" }, `${ev.ok ?? 0} ok, ${ev.failed ?? 0} failed, ${ev.observers ?? 0} views`));
}

function ratio(free, total, unit, digits = 1) {
  if (free === null || free === undefined) return "–";
  return `${fmt(free, digits)} / ${fmt(total, digits)}${unit}`;
}

function drawTable(table, nodes, self) {
  const head = h("thead", {}, h("tr", {}, ["name", "status", "region", "admitted", "latency ms", "jitter ms", "loss %",
    "price/GB", "reputation", "CPU free/total", "memory free/total", "capabilities", "problem"].map((t) => h("th", {}, t))));
  const rows = nodes.map((n) => h("tr", { "data-name": n.name, class: statusClass(n) },
    h("td", {}, h("i", { class: `dot ${statusClass(n)}` }), n.name, n.name === self ? h("span", { class: "muted" }, " (this node)") : null),
    h("td", {}, n.status),
    h("td", { class: "region" }, regionOf(n) ?? NO_REGION),
    h("td", {}, n.admitted ? "yes" : "no"),
    h("td", { class: "num" }, fmt(n.latency_ms)),
    h("td", { class: "num" }, fmt(n.jitter_ms)),
    h("td", { class: "num" }, fmt(n.packet_loss)),
    h("td", { class: "num" }, fmt(n.price_per_gb, 4)),
    h("td", {}, reputation(n)),
    h("td", { class: "num" }, ratio(n.cpu_free, n.cpu_total, "")),
    h("td", { class: "num" }, ratio(n.mem_free_mb, n.mem_total_mb, " MB", 0)),
    h("td", {}, (n.capabilities || []).join(", ") || "–"),
    h("td", { class: "problem" }, n.problem || "")));
  fill(table, head, h("tbody", {}, rows));
}

function sum(nodes, key) {
  return nodes.reduce((total, n) => total + (typeof n[key] === "number" ? n[key] : 0), 0);
}

function drawSummary(dl, nodes, self) {
  const counts = {};
  for (const n of nodes) counts[n.status] = (counts[n.status] || 0) + 1;
  const usable = nodes.filter((n) => n.admitted && n.status === "alive");
  const prices = usable.map((n) => n.price_per_gb).filter((p) => typeof p === "number");
  const regions = {};
  for (const n of nodes) if (regionOf(n) !== null) regions[regionOf(n)] = (regions[regionOf(n)] || 0) + 1;
  const item = (term, value) => [h("dt", {}, term), h("dd", {}, value)];
  fill(dl,
    item("this node", self || "–"),
    item("members", Object.entries(counts).map(([status, n]) => `${n} ${status}`).join(", ") || "none"),
    item("admitted", `${nodes.filter((n) => n.admitted).length} of ${nodes.length}`),
    item("regions", Object.keys(regions).sort().map((r) => `${r}: ${regions[r]}`).join(", ") || "none given"),
    item("CPU free", `${fmt(sum(usable, "cpu_free"), 1)} of ${fmt(sum(usable, "cpu_total"), 1)} cores`),
    item("memory free", `${fmt(sum(usable, "mem_free_mb"), 0)} of ${fmt(sum(usable, "mem_total_mb"), 0)} MB`),
    item("price per GB", prices.length ? `${fmt(Math.min(...prices), 4)} – ${fmt(Math.max(...prices), 4)}` : "–"),
    item("not usable", nodes.filter((n) => !n.admitted || n.problem).map((n) => `${n.name}: ${n.problem || n.status}`)
      .join("; ") || "none"));
}

export function nodesTab() {
  let self = null;
  const refresh = async () => {
    try {
      if (self === null) self = (await api.get("/healthz")).node;
      const nodes = (await api.get("/v1/nodes")).nodes.slice().sort((a, b) => a.name.localeCompare(b.name));
      const alive = nodes.filter((n) => n.status === "alive" && n.admitted).length;
      fill($("nodes-count"), `${nodes.length} members, ${alive} alive and admitted`);
      const coords = await api.get("/v1/coordinates").catch(() => null); // none: the map uses a circle
      drawMap($("node-map"), $("map-how"), $("map-legend"), nodes, self, coords);
      drawTable($("nodes-table"), nodes, self);
      drawSummary($("nodes-summary"), nodes, self);
      fill($("nodes-error"));
    } catch (err) {
      fill($("nodes-error"), errorBox(err));
    }
  };
  const poll = poller(refresh, 5000);
  return { show: () => poll.start(), hide: () => poll.stop() };
}
