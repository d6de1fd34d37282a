// The console's shell: log in with a token, switch tabs (#nodes, #workloads, #decisions, #playground).
import { api, session } from "./api.js";
import { errorBox, fill } from "./dom.js";
import { nodesTab } from "./nodes.js";
import { workloadsTab } from "./workloads.js";
import { decisionsTab } from "./decisions.js";
import { playgroundTab } from "./playground.js";

const $ = (id) => document.getElementById(id);
const tabs = { nodes: nodesTab(), workloads: workloadsTab(), decisions: decisionsTab(), playground: playgroundTab() };
let current = null;

function showTab(name) {
  if (!(name in tabs)) name = "nodes";
  if (current && current !== name) tabs[current].hide();
  for (const key of Object.keys(tabs)) $(`tab-${key}`).hidden = key !== name;
  for (const link of document.querySelectorAll("#tabs a")) {
    if (link.dataset.tab === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current = name;
  tabs[name].show();
}

function showLogin(err) {
  if (current) tabs[current].hide();
  current = null;
  for (const key of Object.keys(tabs)) $(`tab-${key}`).hidden = true;
  $("tabs").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  fill($("login-error"), err ? errorBox(err) : null);
  $("token-input").focus();
}

function enter() {
  $("login").hidden = true;
  $("tabs").hidden = false;
  $("logout").hidden = false;
  showTab(location.hash.slice(1));
}

async function logIn(token) {
  session.save(token);
  try {
    await api.get("/v1/workloads"); // a token route: a refused token says so here, not on some later tab
  } catch (err) {
    session.clear();
    showLogin(err);
    return;
  }
  $("token-input").value = "";
  enter();
}

session.whenRefused((err) => {
  session.clear();
  showLogin(err);
});

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (token) logIn(token);
});
$("logout").addEventListener("click", () => {
  session.clear();
  showLogin(null);
});
window.addEventListener("hashchange", () => {
  if (session.token()) showTab(location.hash.slice(1));
});

api.get("/healthz").then((health) => {
  fill($("this-node"), `· node ${health.node}`);
  document.title = `hypercore console · ${health.node}`;
}).catch(() => {});

if (session.token()) enter();
else showLogin(null);
