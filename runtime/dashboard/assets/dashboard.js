// The dashboard page: polls the JSON API every second and redraws. Every value
// from the cluster goes in through textContent, never as HTML.
"use strict";

const POLL_MS = 1000;
let selectedJob = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function statusBadge(s) {
  return el("span", s, "status " + String(s).replace(/[^A-Z_]/g, ""));
}

function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}

function fmtAmount(name, v) {
  if (name === "memory" || name === "object_store_memory") {
    return (v / (1024 * 1024 * 1024)).toFixed(1) + "GiB";
  }
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

async function getJSON(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) {
    window.location.href = "/login";
    throw new Error("not signed in");
  }
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderNodes(nodes) {
  const rows = nodes.map((n) => {
    const tr = el("tr");
    tr.dataset.nodeId = n.node_id;
    tr.dataset.status = n.status;
    tr.append(el("td", n.node_id.slice(0, 12) + (n.is_head ? " (head)" : "")));
    tr.append(el("td", n.node_ip));
    tr.append(el("td", n.node_type || ""));
    const st = el("td");
    st.append(statusBadge(n.status));
    tr.append(st);
    const res = el("td");
    for (const [name, u] of Object.entries(n.resources)) {
      const span = el("span", null, "res");
      const bar = el("span", null, "bar");
      const fill = el("span");
      fill.style.width = (u.total > 0 ? Math.min(100, (100 * u.used) / u.total) : 0) + "%";
      bar.append(fill);
      span.append(bar, document.createTextNode(name + " " + fmtAmount(name, u.used) + " / " + fmtAmount(name, u.total)));
      res.append(span);
    }
    tr.append(res);
    return tr;
  });
  replaceRows(document.querySelector("#nodes tbody"), rows);
  const alive = nodes.filter((n) => n.status !== "DEAD");
  document.getElementById("node-count").textContent = String(alive.length);
  let used = 0, total = 0;
  for (const n of alive) {
    if (n.resources.CPU) { used += n.resources.CPU.used; total += n.resources.CPU.total; }
  }
  document.getElementById("cpu-usage").textContent = fmtAmount("CPU", used) + " / " + fmtAmount("CPU", total);
}

function renderJobs(jobs) {
  const rows = jobs.map((j) => {
    const tr = el("tr", null, "clickable");
    tr.dataset.submissionId = j.submission_id;
    tr.append(el("td", j.submission_id));
    const st = el("td");
    st.append(statusBadge(j.status));
    tr.append(st);
    tr.append(el("td", j.entrypoint));
    tr.append(el("td", fmtTime(j.start_time)));
    tr.append(el("td", fmtTime(j.end_time)));
    tr.append(el("td", (j.message || "").split("\n")[0]));
    tr.addEventListener("click", () => { selectedJob = j.submission_id; refreshLogs(); });
    return tr;
  });
  replaceRows(document.querySelector("#jobs tbody"), rows);
  document.getElementById("no-jobs").hidden = jobs.length > 0;
  document.getElementById("running-jobs").textContent = String(jobs.filter((j) => j.status === "RUNNING").length);
  if (selectedJob === null && jobs.length > 0) selectedJob = jobs[0].submission_id;
}

function renderActors(actors) {
  const rows = actors.map((a) => {
    const tr = el("tr");
    tr.append(el("td", a.actor_id.slice(0, 12)));
    tr.append(el("td", a.class_name));
    tr.append(el("td", a.name));
    const st = el("td");
    st.append(statusBadge(a.state));
    tr.append(st);
    tr.append(el("td", a.job_id));
    tr.append(el("td", a.pid || ""));
    tr.append(el("td", a.num_restarts));
    return tr;
  });
  replaceRows(document.querySelector("#actors tbody"), rows);
  document.getElementById("actors-section").hidden = actors.length === 0;
  document.getElementById("actor-count").textContent = String(actors.filter((a) => a.state === "ALIVE").length);
}

async function refreshLogs() {
  if (selectedJob === null) return;
  const id = selectedJob;
  const r = await getJSON("/api/jobs/" + encodeURIComponent(id) + "/logs?tail_bytes=65536");
  document.getElementById("log-box").hidden = false;
  document.getElementById("log-job").textContent = id;
  const pre = document.getElementById("job-logs");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = r.logs;
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

async function poll() {
  const err = document.getElementById("error");
  try {
    const [status, jobs, actors] = await Promise.all([
      getJSON("/api/cluster_status"),
      getJSON("/api/dashboard/jobs"),
      getJSON("/api/actors"),
    ]);
    document.getElementById("session").textContent = status.session_name;
    document.getElementById("status-text").textContent = status.status_text;
    renderNodes(status.nodes);
    renderJobs(jobs);
    renderActors(actors);
    await refreshLogs();
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    err.hidden = true;
  } catch (e) {
    err.textContent = "Cannot reach the dashboard API: " + e.message;
    err.hidden = false;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", poll);
