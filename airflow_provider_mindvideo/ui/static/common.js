// Shared by the pages: JSON from the plugin's routes (the browser sends Airflow's token cookie), money, escaping.
"use strict";
const MV = {
  base: location.pathname.replace(/\/(gallery)?$/, "").replace(/\/$/, ""),
  async get(path, params) {
    const query = new URLSearchParams(Object.entries(params || {}).filter(([, v]) => v !== null && v !== undefined && v !== ""));
    const response = await fetch(`${MV.base}${path}?${query}`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status}: ${(await response.json().catch(() => ({}))).detail || response.statusText}`);
    return response.json();
  },
  money(value) { return value === null || value === undefined ? "–" : Number(value).toFixed(2); },
  esc(text) { return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]); },
  safeUrl(url) { return /^https?:\/\//i.test(url) ? url : null; },
  fail(error) { document.getElementById("error").textContent = String(error.message || error); },
  galleryLink(dag, run, task) {
    const params = new URLSearchParams({ dag_id: dag, run_id: run });
    if (task) params.set("task_id", task);
    return `${MV.base}/gallery?${params}`;
  },
  // One output: the remote URL while it is valid, the stored copy when it fails (or when there is no remote one).
  media(item) {
    const m = item.media[0];
    if (!m) return `<div class="thumb"></div>`;
    const stored = m.stored ? `${MV.base}/api/file?${new URLSearchParams({ dag_id: item.dag_id, run_id: item.run_id, task_id: item.task, map_index: item.map_index, position: m.stored.position, n: m.stored.n })}` : null;
    const remote = MV.safeUrl(m.url);
    const src = remote || stored;
    if (!src) return `<div class="thumb"></div>`;
    const fallback = stored && remote ? ` data-fallback="${MV.esc(stored)}" onerror="MV.fallback(this)"` : "";
    if (m.kind === "video") return `<video class="thumb" controls preload="metadata" src="${MV.esc(src)}"${fallback}></video>`;
    return `<img class="thumb" loading="lazy" alt="" src="${MV.esc(src)}"${fallback}>`;
  },
  fallback(element) { const next = element.dataset.fallback; if (next) { delete element.dataset.fallback; element.src = next; } },
};
