// Decisions: recent placements (GET /v1/decisions): ranking, rejections, attempts and outcome.
import { api } from "./api.js";
import { errorBox, fill, h, poller } from "./dom.js";
import { decisionView } from "./explain.js";

const $ = (id) => document.getElementById(id);

function card(d) {
  const attempts = d.attempts || [];
  return h("article", { class: `card outcome-${d.outcome}`, "data-id": d.id || "" },
    h("header", {},
      h("span", { class: `state ${d.outcome}` }, d.outcome),
      " ", d.node ? h("strong", {}, `on ${d.node}`) : null,
      h("span", { class: "muted" }, ` · decided by ${d.decided_by} · ${new Date(d.time * 1000).toLocaleTimeString()}`)),
    h("p", { class: "small" }, "workload ", h("code", {}, d.id || "–"), d.owner ? ` · for ${d.owner}` : ""),
    decisionView(d.decision || {}),
    h("h4", {}, `Attempts (${attempts.length})`),
    attempts.length
      ? h("ol", { class: "attempts" }, attempts.map((a) => h("li", {},
        h("strong", {}, a.node), " ", h("span", { class: `state ${a.outcome}` }, a.outcome),
        a.detail ? h("span", { class: "muted" }, ` — ${a.detail}`) : null)))
      : h("p", { class: "muted" }, "None: no node qualified."));
}

export function decisionsTab() {
  let last = null;
  const poll = poller(async () => {
    const cluster = $("decisions-cluster").checked;
    try {
      const body = await api.get(`/v1/decisions${cluster ? "?cluster=true" : ""}`);
      const key = JSON.stringify(body);
      if (key === last) return; // unchanged: keep what is open
      last = key;
      const unreachable = Object.entries(body.unreachable || {});
      fill($("decisions-list"),
        unreachable.length ? h("p", { class: "muted" }, `Not answering: ${unreachable.map(([n]) => n).join(", ")}`) : null,
        body.decisions.length ? body.decisions.map(card)
          : h("p", { class: "muted" }, "No placements yet. Spawn one from the policy playground."));
      fill($("decisions-error"));
    } catch (err) {
      fill($("decisions-error"), errorBox(err));
    }
  }, 5000);
  $("decisions-cluster").addEventListener("change", () => { last = null; poll.now(); });
  $("decisions-refresh").addEventListener("click", () => { last = null; poll.now(); });
  return { show: () => { last = null; poll.start(); }, hide: () => poll.stop() };
}
