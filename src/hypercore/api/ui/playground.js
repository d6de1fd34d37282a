// Policy playground: edit a policy, see its validation errors and the live
// explain (POST /v1/placements), and spawn a workload with it (POST /v1/workloads).
// "Near" is the CLI's --near: the node latency is measured from (any admitted node;
// default: this one), passed to both, with the links of GET /v1/nodes?near= shown
// beside the ranking.
import { api } from "./api.js";
import { errorBox, fill, h } from "./dom.js";
import { decisionView } from "./explain.js";

const $ = (id) => document.getElementById(id);

function spec() {
  const out = { command: $("spec-command").value };
  const cpu = Number($("spec-cpu").value);
  const mem = Number($("spec-mem").value);
  if ($("spec-cpu").value !== "" && Number.isFinite(cpu)) out.cpu = cpu;
  if ($("spec-mem").value !== "" && Number.isInteger(mem)) out.mem = mem;
  return out;
}

/** The chosen origin for latency (`near`), or null for this node. */
function near() {
  return $("spec-near").value || null;
}

let self = null; // this node's name (GET /healthz)

/** The near choices: this node, then every admitted member (in name order); the current choice is kept. */
async function loadNear() {
  const select = $("spec-near");
  const chosen = select.value;
  const [health, answer] = await Promise.all([api.get("/healthz"), api.get("/v1/nodes")]);
  self = health.node;
  const admitted = answer.nodes.filter((n) => n.admitted && n.name !== health.node)
    .sort((a, b) => a.name.localeCompare(b.name));
  const options = [h("option", { value: "" }, `this node (${health.node})`),
    admitted.map((n) => h("option", { value: n.name }, n.status === "alive" ? n.name : `${n.name} (${n.status})`))];
  if (chosen && !admitted.some((n) => n.name === chosen)) {
    options.push(h("option", { value: chosen }, `${chosen} (no longer admitted)`));
  }
  fill(select, options);
  select.value = chosen;
}

/** The links the explain was scored with, as this node reports them from `origin` (null: this node). */
async function linksFrom(origin) {
  const answer = await api.get(`/v1/nodes${origin ? `?near=${encodeURIComponent(origin)}` : ""}`);
  return { origin: answer.origin, self: self ?? answer.origin, nodes: new Map(answer.nodes.map((n) => [n.name, n])) };
}

/** The policy in the textarea, or null after showing why it is not JSON. */
function policy() {
  try {
    const value = JSON.parse($("policy-text").value);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new SyntaxError("a policy is a JSON object");
    }
    return value;
  } catch (err) {
    fill($("policy-errors"), errorBox({ code: "not JSON", message: err.message }));
    $("policy-text").setAttribute("aria-invalid", "true");
    return null;
  }
}

export function playgroundTab() {
  let loaded = false;
  let timer = null;
  let seq = 0;

  async function explain() {
    const body = policy();
    if (body === null) {
      fill($("explain"));
      return;
    }
    const mine = ++seq;
    const origin = near();
    try {
      const [decision, links] = await Promise.all([
        api.post("/v1/placements", { policy: body, spec: spec(), ...(origin ? { near: origin } : {}) }),
        linksFrom(origin).catch(() => null), // the links are an aid: the explain stands without them
      ]);
      if (mine !== seq) return;
      fill($("policy-errors"));
      $("policy-text").removeAttribute("aria-invalid");
      fill($("explain"), decisionView(decision, links));
      $("explain").dataset.near = origin || "";
    } catch (err) {
      if (mine !== seq) return;
      fill($("policy-errors"), errorBox(err));
      // A near node that left the cluster is not the policy's fault.
      if (String(err && err.message).startsWith("near:")) $("policy-text").removeAttribute("aria-invalid");
      else $("policy-text").setAttribute("aria-invalid", "true");
      fill($("explain"));
    }
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(explain, 300);
  }

  async function load() {
    try {
      $("policy-text").value = JSON.stringify(await api.get("/v1/policy"), null, 2);
      loaded = true;
      await explain();
    } catch (err) {
      fill($("policy-errors"), errorBox(err));
    }
  }

  async function spawn() {
    const body = policy();
    if (body === null) return;
    const button = $("spawn");
    button.disabled = true;
    fill($("spawn-result"), h("p", { class: "muted" }, "placing…"));
    try {
      // A request id makes a retry of this same click land once (docs/placement-protocol.md); naming this node
      // as its home ("<uuid>@<node>"), this node places it itself rather than the owner its hash would pick.
      const origin = near();
      const home = await api.get("/v1/ping").then((p) => p.node, () => null);
      const fresh = crypto.randomUUID();
      const requestId = typeof home === "string" && /^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(home) ? `${fresh}@${home}` : fresh;
      const placed = await api.post("/v1/workloads", { spec: spec(), policy: body, request_id: requestId,
        ...(origin ? { near: origin } : {}) });
      fill($("spawn-result"), h("p", { class: "success", role: "status" }, "Placed ", h("code", {}, placed.id), " on ",
        h("strong", {}, placed.node), ". ", h("a", { href: "#workloads" }, "See it in Workloads"), " · ",
        h("a", { href: "#decisions" }, "its decision")));
    } catch (err) {
      fill($("spawn-result"), errorBox(err));
    } finally {
      button.disabled = false;
    }
  }

  $("policy-text").addEventListener("input", later);
  for (const id of ["spec-command", "spec-cpu", "spec-mem"]) $(id).addEventListener("input", later);
  $("spec-near").addEventListener("change", explain);
  $("spawn").addEventListener("click", spawn);
  $("policy-reset").addEventListener("click", load);

  async function show() {
    try {
      await loadNear();
    } catch (err) {
      fill($("policy-errors"), errorBox(err));
    }
    if (!loaded) load(); else explain();
  }

  return { show, hide: () => clearTimeout(timer) };
}
