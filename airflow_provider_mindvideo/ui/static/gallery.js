// A run's (or a task instance's) outputs, a page at a time from /api/items: the server pages, the browser only shows.
"use strict";
const params = new URLSearchParams(location.search);
const run = { dag_id: params.get("dag_id"), run_id: params.get("run_id"), task_id: params.get("task_id") || null };
const mapIndex = Number.parseInt(params.get("map_index"), 10);
run.map_index = Number.isInteger(mapIndex) ? mapIndex : -1;
let pageNumber = Number.parseInt(params.get("page"), 10) || 1;
const el = (id) => document.getElementById(id);

// Back to the task instance in Airflow's own UI (the page runs in its frame: open it in the top window).
function taskLink(item) {
  const path = `/dags/${encodeURIComponent(run.dag_id)}/runs/${encodeURIComponent(run.run_id)}/tasks/${encodeURIComponent(item.task)}`;
  return item.map_index >= 0 ? `${path}/mapped/${item.map_index}` : path;
}

// What a human review decided: approve, reject, or regenerate (rejected and made again as another task).
function review(decided) {
  if (!decided) return "";
  const who = decided.decided_by ? ` by ${MV.esc(decided.decided_by)}` : decided.timed_out ? " (timed out)" : "";
  const again = decided.regenerated_as ? ` → ${MV.esc(decided.regenerated_as)}` : "";
  const comment = decided.comment ? ` · “${MV.esc(decided.comment)}”` : "";
  return `<div class="review review-${MV.esc(decided.decision)}">review, round ${decided.round}: <b>${MV.esc(decided.decision)}</b>${who}${again}${comment}</div>`;
}

function card(item) {
  const status = MV.esc(item.status);
  const airflowTask = `${MV.esc(item.task)}${item.map_index >= 0 ? `[${item.map_index}]` : ""}`;
  return `<div class="item" data-number="${item.number}">${MV.media({ ...item, dag_id: run.dag_id, run_id: run.run_id })}
    <div class="meta"><div class="prompt" title="${MV.esc(item.prompt)}">${MV.esc(item.prompt || "")}</div>
    <div><span class="status-${status}">${status}</span> · ${MV.esc(item.model || "–")} · ${MV.money(item.cost)}${item.cost_source === "ledger" ? "" : " <span class=muted>(est.)</span>"}</div>
    <div class="muted"><a target="_top" href="${MV.esc(taskLink(item))}">${airflowTask}</a>${Number.isInteger(item.position) ? ` #${item.position + 1}` : ""} · ${MV.esc(item.mindvideo_task_id || "no task yet")}</div>
    ${review(item.review)}
    ${item.error ? `<div class="status-failed">${MV.esc(item.error)}</div>` : ""}</div></div>`;
}

async function load() {
  el("error").textContent = "";
  const data = await MV.get("/api/items", { ...run, page: pageNumber, per_page: el("per_page").value });
  el("what").textContent = `DAG ${run.dag_id}, run ${run.run_id}${run.task_id ? `, task ${run.task_id}` : ""}`;
  const statuses = Object.entries(data.statuses).map(([s, n]) => `${n} ${s}`).join(", ") || "none";
  el("summary").innerHTML = [["Items", data.total], ["Cost", MV.money(data.cost)], ["Statuses", MV.esc(statuses)]]
    .map(([label, value]) => `<div class="card"><div class="muted">${label}</div><div class="v">${value}</div></div>`).join("");
  el("where").textContent = `page ${data.page} of ${data.pages}`;
  el("prev").disabled = data.page <= 1;
  el("next").disabled = data.page >= data.pages;
  el("items").innerHTML = data.items.map(card).join("") || `<p class="muted">No outputs recorded for this run.</p>`;
}

el("prev").addEventListener("click", () => { pageNumber -= 1; load().catch(MV.fail); });
el("next").addEventListener("click", () => { pageNumber += 1; load().catch(MV.fail); });
el("per_page").addEventListener("change", () => { pageNumber = 1; load().catch(MV.fail); });
load().catch(MV.fail);
