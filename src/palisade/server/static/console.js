// The Palisade console: the service graph of the flow store, drawn with Cytoscape.js.
// Namespaces are drawn first; clicking one expands it into its workloads (the server
// aggregates, the page never holds more than it shows). Clicking an edge lists its flows
// and the policies that decided them.
"use strict";

const state = { expanded: new Set(), cy: null };
const $ = (id) => document.getElementById(id);

function query(params) {
  const search = new URLSearchParams({ window: $("window").value });
  for (const [key, value] of Object.entries(params || {})) {
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else search.append(key, value);
  }
  return search.toString();
}

async function getJSON(path, params) {
  const response = await fetch(`/api/v1/${path}?${query(params)}`);
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function elements(graph) {
  const nodes = graph.nodes.map((n) => ({
    group: "nodes",
    data: { id: n.id, label: n.name || n.id, kind: n.kind, namespace: n.namespace || "" },
  }));
  const edges = graph.edges.map((e, i) => ({
    group: "edges",
    data: {
      id: `e${i}`, source: e.source, target: e.target, bytes: e.bytes || 0,
      allowed: e.allowed || 0, denied: e.denied || 0, flows: e.flows || 0,
      state: e.denied ? (e.allowed ? "mixed" : "denied") : "allowed",
    },
  }));
  return nodes.concat(edges);
}

function listNodes(graph) {
  const body = $("node-list").tBodies[0];
  body.replaceChildren(...graph.nodes.map((n) => {
    const row = document.createElement("tr");
    row.dataset.id = n.id;
    row.dataset.kind = n.kind;
    row.textContent = n.id;
    return row;
  }));
}

async function draw() {
  $("status").textContent = "loading…";
  const graph = await getJSON("graph", { expand: [...state.expanded] });
  const big = graph.nodes.length > 200;
  state.cy.elements().remove();
  state.cy.add(elements(graph));
  state.cy.layout({ name: big ? "grid" : "cose", animate: false }).run();
  listNodes(graph);
  $("status").textContent =
    `${graph.nodes.length} nodes, ${graph.edges.length} edges` +
    (state.expanded.size ? `; expanded: ${[...state.expanded].join(", ")}` : "");
  document.body.dataset.ready = "true";
}

function flowTable(records) {
  const table = document.createElement("table");
  table.className = "flows";
  const head = ["time", "reporter", "action", "from", "to", "port", "flows", "bytes", "decided by"];
  table.createTHead().insertRow().append(...head.map((h) => {
    const cell = document.createElement("th");
    cell.textContent = h;
    return cell;
  }));
  const body = table.createTBody();
  for (const r of records) {
    const hits = ((r.policies || {}).enforced_policies || [])
      .slice().sort((a, b) => parseInt(a, 10) - parseInt(b, 10));
    const decided = hits.length ? hits[hits.length - 1].split("|").slice(1).join("|") : "-";
    const peer = (side) => {
      const name = r[`${side}_name`] !== "-" ? r[`${side}_name`] : r[`${side}_name_aggr`];
      const ns = r[`${side}_namespace`];
      return ns && ns !== "-" ? `${ns}/${name}` : (r[`${side}_ip`] || name);
    };
    const row = body.insertRow();
    const cells = [
      new Date(r.end_time * 1000).toLocaleTimeString(), r.reporter, r.action,
      peer("source"), peer("dest"), `${r.dest_port ?? "-"}/${r.proto}`,
      r.num_flows, (r.bytes_in || 0) + (r.bytes_out || 0), decided,
    ];
    cells.forEach((value, index) => {
      const cell = row.insertCell();
      cell.textContent = String(value);
      if (index === 2 && value === "deny") cell.className = "deny";
    });
  }
  return table;
}

async function showEdge(edge) {
  const data = edge.data();
  $("details-title").textContent = `${data.source} → ${data.target}: ` +
    `${data.allowed} allowed, ${data.denied} denied`;
  const records = await getJSON("graph/edge", { source: data.source, target: data.target });
  $("details-body").replaceChildren(flowTable(records));
}

async function showWorkload(node) {
  const data = node.data();
  $("details-title").textContent = `${data.id}`;
  const records = await getJSON("flows", { namespace: data.namespace, workload: data.label, limit: 200 });
  $("details-body").replaceChildren(flowTable(records));
}

async function showWhatIf() {
  const response = await fetch(`/api/v1/whatif?${query({ staged: "true" })}`, { method: "POST" });
  if (!response.ok) throw new Error(`whatif: ${response.status} ${await response.text()}`);
  const report = await response.json();
  $("details-title").textContent =
    `What if the staged policies were enforced: ${report.allow_to_deny.flows} flow(s) would be ` +
    `denied, ${report.deny_to_allow.flows} allowed, ${report.unchanged.flows} unchanged`;
  const table = document.createElement("table");
  table.className = "flows whatif";
  table.createTHead().insertRow().append(...["change", "from", "to", "ports", "flows"].map((h) => {
    const cell = document.createElement("th");
    cell.textContent = h;
    return cell;
  }));
  const body = table.createTBody();
  for (const pair of report.by_workload_pair || []) {
    const row = body.insertRow();
    [pair.change, pair.source, pair.destination, (pair.ports || []).join(" "), pair.flows]
      .forEach((value, index) => {
        const cell = row.insertCell();
        cell.textContent = String(value);
        if (index === 0 && String(value).endsWith("deny")) cell.className = "deny";
      });
  }
  $("details-body").replaceChildren(table);
}

// Security events: newest first, with triage (acknowledge, dismiss) and, for a WAF event,
// an exclusion of its rules for the request's path in the workload's WebApplicationFirewall.
async function post(path, body) {
  const response = await fetch(`/api/v1/${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

async function countEvents() {
  const found = await getJSON("events", { limit: 1000 });
  const fresh = found.events.filter((e) => !e.acknowledged).length;
  $("event-count").textContent = fresh ? `(${fresh} new)` : "";
}

function eventRow(body, event) {
  const row = body.insertRow();
  row.dataset.id = event.id;
  row.className = event.acknowledged ? "acknowledged" : "new";
  const record = event.record || {};
  const rules = (record.rules || []).map((r) => `${r.id} ${r.msg}`).join("\n");
  const cells = [
    new Date(event.time * 1000).toLocaleTimeString(), event.type, String(event.severity),
    event.source_ip || event.source_name || "-",
    event.dest_name ? `${event.dest_namespace}/${event.dest_name}` : (event.dest_ip || event.host || "-"),
    (event.mitre_ids || []).join(" ") + (event.mitre_tactic ? ` (${event.mitre_tactic})` : ""),
    event.description,
  ];
  cells.forEach((value, index) => {
    const cell = row.insertCell();
    cell.textContent = value;
    if (index === 6) {
      cell.title = [record.request_line || "", rules].join("\n");
      if (record.request_line) {
        const line = document.createElement("code");
        line.textContent = record.request_line;
        cell.append(document.createElement("br"), line);
      }
    }
  });
  const actions = row.insertCell();
  const button = (label, action) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.action = label;
    b.addEventListener("click", () => action().then(showEvents).catch(report));
    actions.append(b);
  };
  if (!event.acknowledged) button("acknowledge", () => post(`events/${event.id}/acknowledge`));
  button("dismiss", () => post(`events/${event.id}/dismiss`));
  if (event.type === "waf") {
    button("exclude rule here", async () => {
      const result = await post(`events/${event.id}/exclusion?scope=path`);
      $("status").textContent = `exclusion added to ${result.applied}`;
    });
  }
}

async function showEvents() {
  const found = await getJSON("events", { limit: 500 });
  $("details-title").textContent = `Security events: ${found.events.length}`;
  const table = document.createElement("table");
  table.className = "flows events";
  const head = ["time", "type", "severity", "source", "target", "ATT&CK", "what", ""];
  table.createTHead().insertRow().append(...head.map((h) => {
    const cell = document.createElement("th");
    cell.textContent = h;
    return cell;
  }));
  const body = table.createTBody();
  found.events.forEach((event) => eventRow(body, event));
  $("details-body").replaceChildren(table);
  await countEvents();
}

// WAF settings: each WebApplicationFirewall with its mode, paranoia level and exclusions,
// changed in place through the same validated, atomic apply as `palisade apply` (the proxies
// follow the datastore and reload live).
async function applyDocument(doc) {
  const response = await fetch("/api/v1/apply", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(doc),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error((answer.problems || [answer.detail]).join("; "));
  return answer;
}

function firewallRow(body, doc) {
  const spec = doc.spec || {};
  const row = body.insertRow();
  row.dataset.name = `${doc.metadata.namespace}/${doc.metadata.name}`;
  const cell = (value) => { const c = row.insertCell(); c.textContent = value; return c; };
  cell(row.dataset.name);
  cell(spec.selector || "all()");
  const select = (name, options, current) => {
    const s = document.createElement("select");
    s.name = name;
    options.forEach((o) => s.add(new Option(String(o), String(o), false, String(o) === String(current))));
    row.insertCell().append(s);
    return s;
  };
  const mode = select("mode", ["DetectionOnly", "On", "Off"], spec.mode || "DetectionOnly");
  const level = select("paranoiaLevel", [1, 2, 3, 4], spec.paranoiaLevel || 1);
  const exclusions = row.insertCell();
  (spec.exclusions || []).forEach((e, index) => {
    const item = document.createElement("div");
    item.className = "exclusion";
    item.textContent = `${(e.ruleIds || []).concat(e.tags || []).join(",")}` +
      (e.targets && e.targets.length ? ` on ${e.targets.join(",")}` : "") +
      (e.paths && e.paths.length ? ` under ${e.paths.join(",")}` : "");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "remove";
    remove.addEventListener("click", () => {
      const changed = structuredClone(doc);
      changed.spec.exclusions.splice(index, 1);
      applyDocument(changed).then(() => showFirewalls()).catch(report);
    });
    item.append(" ", remove);
    exclusions.append(item);
  });
  const save = document.createElement("button");
  save.type = "button";
  save.textContent = "save";
  save.addEventListener("click", () => {
    const changed = structuredClone(doc);
    changed.spec = { ...changed.spec, mode: mode.value, paranoiaLevel: Number(level.value) };
    applyDocument(changed)
      .then(() => { $("status").textContent = `${row.dataset.name}: saved`; return showFirewalls(); })
      .catch(report);
  });
  row.insertCell().append(save);
}

async function showFirewalls() {
  const response = await fetch("/api/v1/resources?kind=WebApplicationFirewall");
  if (!response.ok) throw new Error(`resources: ${response.status}`);
  const found = (await response.json()).items;
  $("details-title").textContent = `WAF settings: ${found.length} WebApplicationFirewall(s)`;
  const table = document.createElement("table");
  table.className = "flows firewalls";
  table.createTHead().insertRow().append(
    ...["firewall", "selector", "mode", "paranoia", "exclusions", ""].map((h) => {
      const c = document.createElement("th");
      c.textContent = h;
      return c;
    }));
  const body = table.createTBody();
  found.forEach((doc) => firewallRow(body, doc));
  $("details-body").replaceChildren(table);
}

function start() {
  state.cy = cytoscape({
    container: $("graph"),
    style: [
      { selector: "node", style: { label: "data(label)", "font-size": 10, "background-color": "#3b6e98" } },
      { selector: "node[kind = 'namespace']", style: { shape: "round-rectangle", "background-color": "#14324a", width: 40, height: 28 } },
      { selector: "node[kind = 'network']", style: { shape: "diamond", "background-color": "#8a8f98" } },
      { selector: "edge", style: {
          width: "mapData(bytes, 0, 1000000, 1, 8)", "curve-style": "bezier",
          "target-arrow-shape": "triangle", "line-color": "#5b9b5b", "target-arrow-color": "#5b9b5b" } },
      { selector: "edge[state = 'denied']", style: { "line-color": "#b3261e", "target-arrow-color": "#b3261e", "line-style": "dashed" } },
      { selector: "edge[state = 'mixed']", style: { "line-color": "#d08a1e", "target-arrow-color": "#d08a1e" } },
    ],
  });
  state.cy.on("tap", "node", (event) => {
    const node = event.target;
    if (node.data("kind") === "namespace") {
      state.expanded.add(node.data("namespace") || node.data("label"));
      draw().catch(report);
    } else if (node.data("kind") === "workload") {
      showWorkload(node).catch(report);
    }
  });
  state.cy.on("tap", "edge", (event) => showEdge(event.target).catch(report));
  $("refresh").addEventListener("click", () => draw().catch(report));
  $("whatif").addEventListener("click", () => showWhatIf().catch(report));
  $("events").addEventListener("click", () => showEvents().catch(report));
  $("waf").addEventListener("click", () => showFirewalls().catch(report));
  $("window").addEventListener("change", () => draw().catch(report));
  window.palisade = { state, draw, showEdge, showEvents, showFirewalls };
  draw().catch(report);
  countEvents().catch(report);
}

function report(error) {
  $("status").textContent = String(error);
}

start();
