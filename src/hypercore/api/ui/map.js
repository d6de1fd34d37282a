// The Nodes map: members placed by Serf's network coordinates when this node has them
// (GET /v1/coordinates: estimated round trips, laid out in 2-D by classical multidimensional
// scaling, so that distance on the map ≈ round-trip time); otherwise on a circle, in name order.
// Colored by region when any member has one (then a member that is not alive and admitted is
// drawn faded with a dashed outline), else by status; this node has a ring.
import { fill, fmt, h, s } from "./dom.js";

export const NO_REGION = "—";
const REGION_COLORS = 8; // .region-0 … .region-7 in style.css; more regions than that share colors

/** A member's region, or null: a non-empty string from its /v1/nodes record (absent on older agents). */
export function regionOf(node) {
  return typeof node.region === "string" && node.region !== "" ? node.region : null;
}

const SIZE = 360;
const C = SIZE / 2;
const INNER = 115; // radius the coordinate layout is scaled into
const OUTER = 150; // members without coordinates (failed, left, not yet known) sit on this ring

// Own properties only: member names come from gossip, and "__proto__" is a name like any other.
function own(obj, key) {
  return obj && typeof obj === "object" && Object.hasOwn(obj, key) ? obj[key] : undefined;
}

function dot(a, b) {
  return a.reduce((sum, x, i) => sum + x * b[i], 0);
}

/** 2-D points whose distances approximate `rtt` between `names` (null when a pair is unknown). */
export function embed(names, rtt) {
  const n = names.length;
  const d2 = names.map((a) => names.map((b) => {
    if (a === b) return 0;
    const v = own(own(rtt, a), b) ?? own(own(rtt, b), a);
    return typeof v === "number" ? v * v : NaN;
  }));
  if (d2.some((row) => row.some((v) => !Number.isFinite(v)))) return null;
  const rowMean = d2.map((row) => row.reduce((x, y) => x + y, 0) / n);
  const mean = rowMean.reduce((x, y) => x + y, 0) / n;
  const B = d2.map((row, i) => row.map((v, j) => -0.5 * (v - rowMean[i] - rowMean[j] + mean)));
  const axes = [];
  for (let k = 0; k < 2; k++) {
    let v = names.map((_, i) => Math.sin(1 + i * 2.3 + k)); // fixed start: the same layout every refresh
    for (let it = 0; it < 200; it++) {
      const w = B.map((row) => dot(row, v));
      for (const [u, l] of axes) {
        const p = dot(u, v);
        for (let i = 0; i < n; i++) w[i] -= l * p * u[i];
      }
      const norm = Math.hypot(...w);
      if (norm < 1e-12) break;
      v = w.map((x) => x / norm);
    }
    const lambda = Math.max(0, dot(v, B.map((row) => dot(row, v))) - axes.reduce((sum, [u, l]) => sum + l * dot(u, v) ** 2, 0));
    if (v[0] < 0) v = v.map((x) => -x); // a stable orientation
    axes.push([v, lambda]);
  }
  return names.map((_, i) => axes.map(([v, l]) => v[i] * Math.sqrt(l)));
}

function circle(count, radius, offset = 0) {
  return Array.from({ length: count }, (_, i) => {
    const angle = (2 * Math.PI * i) / Math.max(1, count) - Math.PI / 2 + offset;
    return [C + (count > 1 ? radius : 0) * Math.cos(angle), C + (count > 1 ? radius : 0) * Math.sin(angle)];
  });
}

/** Map name → [x, y], and how it was laid out. */
function layout(nodes, coords) {
  const listed = new Set(coords && Array.isArray(coords.nodes) ? coords.nodes : []);
  const known = nodes.filter((n) => listed.has(n.name)).map((n) => n.name);
  const points = known.length >= 2 ? embed(known, coords.rtt_ms) : null;
  const spread = points ? Math.max(...points.map(([x, y]) => Math.hypot(x, y))) : 0;
  if (!points || !(spread > 1e-9)) {
    const at = circle(nodes.length, INNER);
    return { where: new Map(nodes.map((n, i) => [n.name, at[i]])), how: "circle" };
  }
  const where = new Map(known.map((name, i) => [name, [C + (points[i][0] / spread) * INNER, C + (points[i][1] / spread) * INNER]]));
  const rest = nodes.filter((n) => !where.has(n.name));
  circle(rest.length, OUTER, Math.PI / 7).forEach((p, i) => where.set(rest[i].name, p));
  return { where, how: "coordinates", span: spread };
}

export function statusClass(node) {
  if (!node.admitted) return "unadmitted";
  return ["alive", "failed", "left", "leaving"].includes(node.status) ? node.status : "other";
}

/** How members are colored: by region (region → class, in name order of the regions) when any has one. */
function coloring(nodes) {
  const regions = [...new Set(nodes.map(regionOf).filter((r) => r !== null))].sort();
  if (!regions.length) return { by: "status", classOf: statusClass, regions };
  // Classes come from the region's position, never from its text: region names are gossip.
  const index = new Map(regions.map((r, i) => [r, `region-${i % REGION_COLORS}`]));
  return { by: "region", regions, index,
    classOf: (node) => `${statusClass(node)} ${regionOf(node) === null ? "region-none" : index.get(regionOf(node))}` };
}

function drawLegend(legend, color, nodes) {
  if (color.by === "status") {
    fill(legend, [["alive", "alive"], ["failed", "failed"], ["left", "left"], ["unadmitted", "not admitted"]]
      .map(([cls, text]) => [h("i", { class: `dot ${cls}` }), text, " "]));
    return;
  }
  const items = color.regions.map((r) => [h("i", { class: `dot ${color.index.get(r)}`, "data-region": r }), r, " "]);
  if (nodes.some((n) => regionOf(n) === null)) items.push([h("i", { class: "dot region-none" }), "no region", " "]);
  items.push(h("span", { class: "muted" }, "· faded: not alive or not admitted"));
  fill(legend, items);
}

export function drawMap(svg, caption, legend, nodes, self, coords) {
  const color = coloring(nodes);
  const { where, how } = layout(nodes, coords);
  const lines = [];
  if (how === "coordinates" && where.has(self) && nodes.length <= 12) {
    const [sx, sy] = where.get(self);
    for (const n of nodes) {
      const rtt = own(own(coords.rtt_ms, self), n.name);
      if (n.name === self || !where.has(n.name) || typeof rtt !== "number") continue;
      const [x, y] = where.get(n.name);
      lines.push(s("line", { x1: sx, y1: sy, x2: x, y2: y, class: "link" }),
        s("text", { x: (sx + x) / 2, y: (sy + y) / 2 - 4, "text-anchor": "middle", class: "link-label" }, `${fmt(rtt)} ms`));
    }
  }
  const items = nodes.map((node) => {
    const [x, y] = where.get(node.name);
    const below = y > C + 20;
    const label = node.name.length > 24 ? `${node.name.slice(0, 23)}…` : node.name;
    const region = regionOf(node);
    return s("g", { class: `map-node ${color.classOf(node)}`, "data-name": node.name, "data-region": region ?? "" },
      s("title", {}, `${node.name}: ${node.status}${region !== null ? `, region ${region}` : ""}`
        + `${node.problem ? ` (${node.problem})` : ""}`),
      node.name === self ? s("circle", { cx: x, cy: y, r: 17, class: "self-ring" }) : null,
      s("circle", { cx: x, cy: y, r: 12, class: "dot" }),
      s("text", { x, y: below ? y + 30 : y - 20, "text-anchor": "middle" }, label));
  });
  const orbit = how === "circle" && nodes.length > 1 ? s("circle", { cx: C, cy: C, r: INNER, class: "orbit" }) : null;
  fill(svg, orbit, lines, items);
  svg.dataset.layout = how;
  svg.dataset.color = color.by;
  svg.classList.toggle("by-region", color.by === "region");
  svg.setAttribute("aria-label", `nodes by ${color.by}`);
  drawLegend(legend, color, nodes);
  fill(caption, how === "coordinates"
    ? "Placed by Serf's network coordinates: distance on the map ≈ estimated round trip; lines from this node."
    : "On a circle: this node has no network coordinates for them yet.");
}
