// Policy playground: edit a policy, see its validation errors and the live
// explain (POST /v1/placements), and spawn a workload with it (POST /v1/workloads).
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
    try {
      const decision = await api.post("/v1/placements", { policy: body, spec: spec() });
      if (mine !== seq) return;
      fill($("policy-errors"));
      $("policy-text").removeAttribute("aria-invalid");
      fill($("explain"), decisionView(decision));
    } catch (err) {
      if (mine !== seq) return;
      fill($("policy-errors"), errorBox(err));
      $("policy-text").setAttribute("aria-invalid", "true");
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
      // A request id makes a retry of this same click land once (docs/placement-protocol.md).
      const placed = await api.post("/v1/workloads", { spec: spec(), policy: body, request_id: crypto.randomUUID() });
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
  $("spawn").addEventListener("click", spawn);
  $("policy-reset").addEventListener("click", load);

  return { show: () => { if (!loaded) load(); else explain(); }, hide: () => clearTimeout(timer) };
}
