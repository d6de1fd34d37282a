// Workloads: the caller's workloads on every node (all of them for a management token),
// with stop and remove, and a log tail polled every 2 s while open.
import { api } from "./api.js";
import { age, errorBox, fill, h, poller } from "./dom.js";

const $ = (id) => document.getElementById(id);
const LIVE = new Set(["pending", "running"]);

function what(w) {
  const spec = w.spec || {};
  return spec.command || spec.image_ref || "";
}

export function workloadsTab() {
  let logId = null;
  let listFailed = false; // the error shown is the list's own (cleared when the list answers again)
  const logPoll = poller(async () => {
    if (logId === null) return;
    const id = logId;
    try {
      const text = await api.text(`/v1/workloads/${encodeURIComponent(id)}/logs?tail=50`);
      if (id !== logId) return;
      const pre = $("log-text");
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = text || "(empty)";
      if (atEnd) pre.scrollTop = pre.scrollHeight;
      fill($("log-error"));
    } catch (err) {
      if (id === logId) fill($("log-error"), errorBox(err));
    }
  }, 2000);

  function openLog(id) {
    logId = id;
    fill($("log-id"), id);
    $("log-text").textContent = "";
    fill($("log-error"));
    $("log-pane").hidden = false;
    logPoll.stop();
    logPoll.start();
  }

  function closeLog() {
    logId = null;
    logPoll.stop();
    $("log-pane").hidden = true;
  }
  $("log-close").addEventListener("click", closeLog);

  async function act(button, run) {
    button.disabled = true;
    try {
      await run();
      fill($("workloads-error"));
    } catch (err) {
      fill($("workloads-error"), errorBox(err));
    }
    await list.now();
  }

  function row(w) {
    const id = encodeURIComponent(w.id);
    const live = LIVE.has(w.state);
    const stop = h("button", { type: "button", class: "small", "data-action": "stop", disabled: !live },
      "Stop");
    stop.addEventListener("click", () => act(stop, () => api.del(`/v1/workloads/${id}`)));
    const remove = h("button", { type: "button", class: "small secondary", "data-action": "remove", disabled: live },
      "Remove");
    remove.addEventListener("click", () => act(remove, async () => {
      await api.post(`/v1/workloads/${id}/remove`);
      if (logId === w.id) closeLog();
    }));
    const logs = h("button", { type: "button", class: "small secondary", "data-action": "logs" }, "Logs");
    logs.addEventListener("click", () => openLog(w.id));
    return h("tr", { "data-id": w.id, "data-state": w.state },
      h("td", {}, h("code", { title: w.id }, w.id.slice(0, 8))),
      h("td", {}, w.node || "–"),
      h("td", {}, h("span", { class: `state ${w.state}` }, w.state)),
      h("td", { class: "cmd" }, what(w)),
      h("td", {}, w.owner || "–"),
      h("td", { class: "num" }, age(w.created_at)),
      h("td", { class: "num" }, w.exit_code === null || w.exit_code === undefined ? "–" : String(w.exit_code)),
      h("td", { class: "actions" }, h("span", { class: "buttons" }, stop, remove, logs)));
  }

  const list = poller(async () => {
    try {
      const body = await api.get("/v1/workloads");
      const workloads = body.workloads.slice().reverse(); // newest first
      fill($("workloads-count"), `${workloads.length}`);
      const head = h("thead", {}, h("tr", {}, ["id", "node", "state", "command / image", "owner", "age", "exit", ""]
        .map((t) => h("th", {}, t))));
      const rows = workloads.length ? workloads.map(row)
        : [h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No workloads. Spawn one from the policy playground."))];
      fill($("workloads-table"), head, h("tbody", {}, rows));
      if (listFailed) fill($("workloads-error"));
      listFailed = false;
      const unreachable = Object.entries(body.unreachable || {});
      fill($("workloads-unreachable"), unreachable.length
        ? `Not answering: ${unreachable.map(([n, e]) => `${n} (${e})`).join("; ")}` : null);
    } catch (err) {
      listFailed = true;
      fill($("workloads-error"), errorBox(err));
    }
  }, 3000);

  return {
    show: () => { list.start(); if (logId !== null) logPoll.start(); },
    hide: () => { list.stop(); logPoll.stop(); },
  };
}
