// aisle's dashboard: one page that polls the gateway's admin API every two seconds (with the
// session cookie the login sets) and draws the cluster from the nodes' own counters.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { Window, bytes, duration, progress, rate, usedPercent } from "./format";

const POLL_MS = 2000;
const app = document.getElementById("app")!;

const esc = (s: unknown): string =>
  String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

class Unauthorized extends Error {}

async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const r = await fetch(path, {
    ...init,
    credentials: "same-origin",
    headers: { "x-aisle-ui": "1", ...(init.headers || {}) },
  });
  if (r.status === 401 || r.status === 403) throw new Unauthorized();
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return (await r.json()) as T;
}

// ---- login ----------------------------------------------------------------------------------

function showLogin(message = ""): void {
  stopPolling();
  app.innerHTML = `
    <form id="login" class="login">
      <h1>aisle</h1>
      <p>Sign in with the cluster's S3 access key and secret key.</p>
      <label>Access key <input name="access_key" autocomplete="username" required></label>
      <label>Secret key <input name="secret_key" type="password" autocomplete="current-password" required></label>
      <button type="submit">Sign in</button>
      <p class="error" id="login-error">${esc(message)}</p>
    </form>`;
  const form = document.getElementById("login") as HTMLFormElement;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    const r = await fetch("/_aisle/ui/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(data),
    });
    if (r.ok) showDashboard();
    else showLogin("Those keys are not the cluster's.");
  });
}

// ---- dashboard ------------------------------------------------------------------------------

interface TargetStatus {
  objects_per_mountpath: number[];
  mountpaths: string[];
  meta_version: number;
  disks?: { total: number; free: number }[];
  started_ms?: number;
  buckets?: Record<string, { objects: number; bytes: number }>;
  rebalance: { generation: number; done: boolean; misplaced: number };
}
interface TargetView {
  id: string;
  url: string;
  admin: string;
  health: { down_since_ms?: number; out: boolean; catching_up: boolean };
  status?: TargetStatus;
  error?: string;
}
interface ClusterView {
  version: number;
  targets: TargetView[];
  buckets: string[];
  aliases: { name: string; source: string; pipeline: string[]; args?: string }[];
  gateway_bytes_out: number;
  gateway_bytes_in: number;
  gateway_requests: number;
  gateway_started_ms: number;
  version_string: string;
  bucket_copies: Record<string, number>;
  remotes: Record<string, { url: string; coherence: string }>;
  rebalance: { generation: number; settled: boolean };
}
interface JobView {
  id: string;
  kind: string;
  status: string;
  total: number;
  done: number;
  bytes: number;
  errors: string[];
}
interface EtlView {
  builtins: string[];
  registered: { name: string; communicator: string; running: boolean }[];
  aliases: { name: string; source: string; pipeline: string[] }[];
}
interface EtlShow {
  targets: [string, { Ok?: { ready: boolean; restarts: number; errors: { message: string }[] }; Err?: string }][];
}

let timer: number | undefined;
const windowSize = 90;
const traffic = new Window(windowSize, 2);
const requests = new Window(windowSize, 1);
let last: { t: number; out: number; in: number; req: number } | null = null;
let charts: { traffic?: uPlot; requests?: uPlot } = {};

function stopPolling(): void {
  if (timer !== undefined) window.clearInterval(timer);
  timer = undefined;
  charts.traffic?.destroy();
  charts.requests?.destroy();
  charts = {};
}

function showDashboard(): void {
  stopPolling();
  app.innerHTML = `
    <header><h1>aisle</h1><span id="summary"></span><button id="logout">Sign out</button></header>
    <section><h2>Nodes</h2><table id="nodes"></table></section>
    <section class="charts">
      <div><h2>Throughput (gateway)</h2><div id="traffic"></div></div>
      <div><h2>Requests/s (gateway)</h2><div id="requests"></div></div>
    </section>
    <section><h2>Capacity</h2><table id="capacity"></table></section>
    <section><h2>Buckets</h2><table id="buckets"></table></section>
    <section><h2>Transforms and alias buckets</h2><div id="transforms"></div></section>
    <section><h2>Jobs</h2><table id="jobs"></table></section>`;
  document.getElementById("logout")!.addEventListener("click", async () => {
    await fetch("/_aisle/ui/logout", { method: "POST", credentials: "same-origin" });
    showLogin();
  });
  const width = Math.min(560, Math.max(280, (document.body.clientWidth - 80) / 2));
  charts.traffic = new uPlot(
    { width, height: 180, series: [{}, { label: "out", stroke: "#2a7" , value: (_u, v) => bytes(v ?? 0) + "/s" }, { label: "in", stroke: "#27c", value: (_u, v) => bytes(v ?? 0) + "/s" }],
      axes: [{}, { values: (_u, vs) => vs.map((v) => bytes(v) + "/s"), size: 80 }] },
    [[], [], []], document.getElementById("traffic")!);
  charts.requests = new uPlot(
    { width, height: 180, series: [{}, { label: "req/s", stroke: "#c72" }] },
    [[], []], document.getElementById("requests")!);
  refresh();
  timer = window.setInterval(refresh, POLL_MS);
}

async function refresh(): Promise<void> {
  try {
    const [cluster, jobs, etl] = await Promise.all([
      api<ClusterView>("/_aisle/v1/cluster"),
      api<JobView[]>("/_aisle/v1/jobs"),
      api<EtlView>("/_aisle/v1/etl"),
    ]);
    const shows = await Promise.all(
      etl.registered.map((s) => api<EtlShow>(`/_aisle/v1/etl/spec/${encodeURIComponent(s.name)}`).catch(() => null)),
    );
    draw(cluster, jobs, etl, shows);
  } catch (e) {
    if (e instanceof Unauthorized) showLogin("Your session ended: sign in again.");
    else document.getElementById("summary")!.textContent = `cannot reach the gateway: ${e}`;
  }
}

function state(t: TargetView): string {
  if (t.health.down_since_ms) return `down ${duration((Date.now() - t.health.down_since_ms) / 1000)}${t.health.out ? " (out)" : ""}`;
  if (t.health.catching_up) return `${t.admin}, catching up`;
  return `${t.admin}, up`;
}

function draw(c: ClusterView, jobs: JobView[], etl: EtlView, shows: (EtlShow | null)[]): void {
  const now = Date.now();
  const up = c.targets.filter((t) => !t.health.down_since_ms).length;
  document.getElementById("summary")!.textContent =
    `v${c.version_string} · cluster map v${c.version} · ${c.targets.length} targets (${up} up) · ` +
    `rebalance ${c.rebalance.settled ? "settled" : "running"} · gateway up ${duration((now - c.gateway_started_ms) / 1000)}`;

  // Nodes.
  const rows = c.targets.map((t) => {
    const s = t.status;
    const objects = s ? s.objects_per_mountpath.reduce((a, b) => a + b, 0) : 0;
    return `<tr data-target="${esc(t.id)}"><td>target</td><td>${esc(t.id)}</td><td>${esc(t.url)}</td><td>${esc(state(t))}</td>
      <td>${s?.started_ms ? duration((now - s.started_ms) / 1000) : "—"}</td><td>${s ? objects : esc(t.error)}</td>
      <td>${s ? `g${s.rebalance.generation} ${s.rebalance.done ? "done" : "walking"}` : ""}</td></tr>`;
  });
  document.getElementById("nodes")!.innerHTML =
    `<tr><th>role</th><th>id</th><th>address</th><th>state</th><th>uptime</th><th>objects</th><th>rebalance</th></tr>
     <tr><td>gateway</td><td>gateway</td><td>${esc(location.host)}</td><td>up</td><td>${duration((now - c.gateway_started_ms) / 1000)}</td><td></td><td></td></tr>` +
    rows.join("");

  // Charts, from the gateway's own counters.
  const cur = { t: now, out: c.gateway_bytes_out, in: c.gateway_bytes_in, req: c.gateway_requests };
  if (last) {
    const t = now / 1000;
    traffic.push(t, [rate({ t: last.t, v: last.out }, { t: now, v: cur.out }), rate({ t: last.t, v: last.in }, { t: now, v: cur.in })]);
    requests.push(t, [rate({ t: last.t, v: last.req }, { t: now, v: cur.req })]);
    charts.traffic?.setData([traffic.times, ...traffic.series]);
    charts.requests?.setData([requests.times, ...requests.series]);
  }
  last = cur;

  // Capacity.
  const cap: string[] = [];
  for (const t of c.targets) {
    const s = t.status;
    if (!s) continue;
    s.mountpaths.forEach((mp, i) => {
      const d = s.disks?.[i];
      const used = d ? usedPercent(d.total, d.free) : 0;
      cap.push(`<tr><td>${esc(t.id)}</td><td>${esc(mp)}</td><td>${s.objects_per_mountpath[i] ?? 0}</td>
        <td><div class="bar"><div style="width:${used}%"></div></div> ${used}% used</td><td>${d ? bytes(d.free) + " free of " + bytes(d.total) : "—"}</td></tr>`);
    });
  }
  document.getElementById("capacity")!.innerHTML =
    `<tr><th>target</th><th>mountpath</th><th>objects</th><th>disk</th><th>space</th></tr>` + cap.join("");

  // Buckets: objects and bytes stored, summed over the targets (every copy counts).
  const usage: Record<string, { objects: number; bytes: number }> = {};
  for (const t of c.targets) {
    for (const [b, u] of Object.entries(t.status?.buckets ?? {})) {
      const x = (usage[b] ??= { objects: 0, bytes: 0 });
      x.objects += u.objects;
      x.bytes += u.bytes;
    }
  }
  const brows = c.buckets.map((b) => {
    const u = usage[b] ?? { objects: 0, bytes: 0 };
    const copies = c.bucket_copies[b] ?? 1;
    const remote = c.remotes?.[b];
    const kind = remote ? `remote: ${esc(remote.url)} (${esc(remote.coherence)})` : "local";
    return `<tr data-bucket="${esc(b)}"><td>${esc(b)}</td><td>${kind}</td><td>${copies}</td>
      <td>${Math.round(u.objects / copies)}</td><td>${bytes(u.bytes)}</td></tr>`;
  });
  document.getElementById("buckets")!.innerHTML =
    `<tr><th>bucket</th><th>kind</th><th>copies</th><th>objects${c.buckets.some((b) => c.remotes?.[b]) ? " (cached)" : ""}</th><th>stored (all copies)</th></tr>` +
    brows.join("");

  // Transforms and aliases.
  const reg = etl.registered.map((s, i) => {
    const per = shows[i]?.targets ?? [];
    const ready = per.filter(([, st]) => st.Ok?.ready).length;
    const errors = per.flatMap(([, st]) => st.Ok?.errors ?? []).slice(-3);
    return `<tr><td>${esc(s.name)}</td><td>${esc(s.communicator)}</td><td>${s.running ? "running" : "stopped"}</td>
      <td>${ready}/${per.length} targets ready</td><td>${errors.map((e) => esc(e.message)).join("<br>")}</td></tr>`;
  });
  document.getElementById("transforms")!.innerHTML = `
    <p>Built-in: ${etl.builtins.map(esc).join(", ")}</p>
    <table><tr><th>transform</th><th>communicator</th><th>state</th><th>ready</th><th>recent errors</th></tr>${reg.join("")}</table>
    <table><tr><th>alias bucket</th><th>source</th><th>pipeline</th></tr>
    ${c.aliases.map((a) => `<tr><td>${esc(a.name)}</td><td>${esc(a.source)}</td><td>${esc(a.pipeline.join(","))}</td></tr>`).join("")}</table>`;

  // Jobs.
  const jrows = jobs.map((j) => {
    const pct = progress(j.done, j.total);
    const abort = j.status === "running" ? `<button class="abort" data-job="${esc(j.id)}">Abort</button>` : "";
    return `<tr data-job-row="${esc(j.id)}"><td>${esc(j.id)}</td><td>${esc(j.kind)}</td><td>${esc(j.status)}</td>
      <td><div class="bar"><div style="width:${pct}%"></div></div> ${j.done}/${j.total}</td><td>${bytes(j.bytes)}</td>
      <td>${j.errors.length}</td><td>${abort}</td></tr>`;
  });
  const table = document.getElementById("jobs")!;
  table.innerHTML = `<tr><th>job</th><th>kind</th><th>status</th><th>progress</th><th>bytes</th><th>errors</th><th></th></tr>` + jrows.join("");
  table.querySelectorAll<HTMLButtonElement>("button.abort").forEach((b) =>
    b.addEventListener("click", async () => {
      b.disabled = true;
      await api(`/_aisle/v1/jobs/${encodeURIComponent(b.dataset.job!)}/abort`, { method: "POST" }).catch(() => null);
      refresh();
    }),
  );
}

// Start: the dashboard if the session cookie is still good, else the login.
api<ClusterView>("/_aisle/v1/cluster")
  .then(() => showDashboard())
  .catch(() => showLogin());
