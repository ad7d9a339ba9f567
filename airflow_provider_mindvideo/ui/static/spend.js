// The MindVideo page: figures from /api/spend, a stacked bar chart drawn as SVG by hand (no library).
"use strict";
const COLORS = ["#017cee", "#e07b39", "#38a169", "#9f7aea", "#d53f8c", "#319795", "#d69e2e", "#718096"];
const $ = (id) => document.getElementById(id);

function table(rows, columns) {
  if (!rows.length) return `<p class="muted">None.</p>`;
  const head = columns.map(([label, , numeric]) => `<th${numeric ? ' class="n"' : ""}>${label}</th>`).join("");
  const body = rows.map((row) => `<tr>${columns.map(([, cell, numeric]) => `<td${numeric ? ' class="n"' : ""}>${cell(row)}</td>`).join("")}</tr>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function chart(daily, since, days) {
  const keys = [...new Set(daily.map((d) => d.key))];
  const dates = [];
  const start = new Date(since);
  for (let i = 0; i < days; i++) dates.push(new Date(start.getTime() + i * 86400000).toISOString().slice(0, 10));
  const byDay = Object.fromEntries(dates.map((d) => [d, {}]));
  for (const d of daily) if (byDay[d.day]) byDay[d.day][d.key] = d.counted;
  const totals = dates.map((d) => Object.values(byDay[d]).reduce((a, b) => a + b, 0));
  const max = Math.max(...totals, 0.01);
  const width = 760, height = 200, left = 48, bottom = 20, bar = (width - left) / dates.length;
  let svg = `<svg viewBox="0 0 ${width} ${height + bottom}" width="100%" role="img" aria-label="Spend per day">`;
  // The top label sits below the top edge: at y = 4 its upper half would be cut off.
  for (const f of [0, 0.5, 1]) svg += `<text x="0" y="${height - f * height + (f === 1 ? 10 : 4)}">${MV.money(max * f)}</text>`;
  dates.forEach((day, i) => {
    let y = height;
    keys.forEach((key, k) => {
      const value = byDay[day][key] || 0;
      if (!value) return;
      const h = (value / max) * height;
      y -= h;
      svg += `<rect x="${left + i * bar + 1}" y="${y}" width="${Math.max(bar - 2, 1)}" height="${h}" fill="${COLORS[k % COLORS.length]}"><title>${MV.esc(day)} ${MV.esc(key || "(no DAG)")}: ${MV.money(value)}</title></rect>`;
    });
    if (i % Math.ceil(dates.length / 8) === 0) svg += `<text x="${left + i * bar}" y="${height + 14}">${day.slice(5)}</text>`;
  });
  $("chart").innerHTML = svg + "</svg>";
  $("legend").innerHTML = keys.map((key, k) => `<span><i style="background:${COLORS[k % COLORS.length]}"></i>${MV.esc(key || "(no DAG)")}</span>`).join("");
}

function fillChoices(select, values) {
  const current = select.value;
  select.length = 1;
  for (const value of values) select.add(new Option(value, value));
  select.value = values.includes(current) ? current : "";
}

async function load() {
  $("error").textContent = "";
  const data = await MV.get("/api/spend", { days: $("days").value, by: $("by").value, dag_id: $("dag").value, model: $("model").value });
  if (!data.ledger) { $("error").textContent = "No spend ledger yet: it starts with the first create under a budget (docs: spend)."; return; }
  fillChoices($("dag"), data.choices.dags);
  fillChoices($("model"), data.choices.models);
  const o = data.overall;
  $("overall").innerHTML = [["Counted", MV.money(o.settled + o.held)], ["Settled", MV.money(o.settled)], ["Held in flight", MV.money(o.held)], ["Creates", o.creates], ["Failed creates", o.failed], ["Refused by a budget", data.refused.count]]
    .map(([label, value]) => `<div class="card"><div class="muted">${label}</div><div class="v">${value}</div></div>`).join("");
  chart(data.daily, data.since, data.days);
  $("windows").innerHTML = !data.budgets_visible ? `<p class="muted">Budgets add up every DAG's creates: shown to people who may read every DAG.</p>` :
    table(data.windows, [["Budget", (w) => `${MV.esc(w.account)} / ${MV.esc(w.budget)}`], ["Window", (w) => `${MV.esc(w.period)} from ${MV.esc(w.start.slice(0, 16))} UTC`],
      ["Limit", (w) => MV.money(w.limit), true], ["Spent", (w) => MV.money(w.spent), true], ["Reserved", (w) => MV.money(w.reserved), true], ["Left", (w) => MV.money(w.left), true],
      ["", (w) => `<div class="bar"><span class="spent" style="width:${(100 * w.spent) / (w.limit || 1)}%"></span><span class="held" style="width:${(100 * w.reserved) / (w.limit || 1)}%"></span></div>`],
      ["Resets", (w) => `${MV.esc(w.resets_at.slice(0, 16))} UTC`]]);
  const top = [["Creates", (r) => r.creates, true], ["Settled", (r) => MV.money(r.settled), true], ["Held", (r) => MV.money(r.held), true], ["Failed", (r) => r.failed, true], ["Counted", (r) => MV.money(r.counted), true]];
  $("top_dags").innerHTML = table(data.top_dags, [["DAG", (r) => MV.esc(r.key || "(no DAG)")], ...top]);
  $("top_models").innerHTML = table(data.top_models, [["Model", (r) => MV.esc(r.key)], ...top]);
  const creates = [["When (UTC)", (r) => MV.esc(r.created_at.slice(0, 19))], ["DAG / run / task", (r) => r.dag_id ? `<a target="_top" href="${MV.esc(MV.galleryLink(r.dag_id, r.run_id, r.task_id))}">${MV.esc(r.dag_id)} / ${MV.esc(r.run_id)} / ${MV.esc(r.task_id)}</a>` : "(no DAG)"],
    ["Model", (r) => MV.esc(r.model)], ["MindVideo task", (r) => MV.esc(r.mindvideo_task_id || "–")], ["State", (r) => MV.esc(r.state)], ["Cost", (r) => MV.money(r.cost), true]];
  $("failed").innerHTML = table(data.failed, creates);
  const refused = data.refused;
  $("refused_count").textContent = `${refused.count} refused in the window${refused.count > refused.items.length ? `, the newest ${refused.items.length} below` : ""}.`;
  $("refused").innerHTML = table(refused.items, [["When (UTC)", (r) => MV.esc(r.created_at.slice(0, 19))],
    ["DAG / run / task", (r) => `<a target="_top" href="${MV.esc(MV.galleryLink(r.dag_id, r.run_id, r.task_id))}">${MV.esc(r.dag_id)} / ${MV.esc(r.run_id)} / ${MV.esc(r.task_id)}</a>${Number.isInteger(r.position) ? ` #${r.position + 1}` : ""}`],
    ["Model", (r) => MV.esc(r.model || "–")], ["Would have held", (r) => MV.money(r.would_hold), true], ["Why", (r) => MV.esc(r.error || r.budgets || "")]]);
  $("recent").innerHTML = table(data.recent, [["", (r) => `<span class="thumbslot" data-dag="${MV.esc(r.dag_id || "")}" data-run="${MV.esc(r.run_id || "")}" data-task="${MV.esc(r.mindvideo_task_id || "")}"></span>`], ...creates]);
  for (const slot of document.querySelectorAll(".thumbslot")) thumbnail(slot);
}

async function thumbnail(slot) {
  const { dag, run, task } = slot.dataset;
  if (!dag || !run || !task) return;
  const data = await MV.get("/api/items", { dag_id: dag, run_id: run, mindvideo_task_id: task, per_page: 1 }).catch(() => null);
  const item = data && data.items[0];
  if (item) slot.innerHTML = MV.media({ ...item, dag_id: dag, run_id: run });
}

for (const id of ["days", "by", "dag", "model"]) $(id).addEventListener("change", () => load().catch(MV.fail));
load().catch(MV.fail);
