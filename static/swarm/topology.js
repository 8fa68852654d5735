/* Swarm fleet topology: the control plane and every drone on one canvas, live over /ws/topology/.
 *
 * The server sends a snapshot, then compact frames a few times a second
 * (drones/topology/feed.py): heartbeat ids (drawn as packets travelling from
 * the drone to the control plane), pongs (packets the other way), state
 * changes and ladder steps. Everything is drawn in requestAnimationFrame onto
 * two stacked canvases: below, the links, hub and group labels (an offscreen
 * layer drawn once per layout) and the nodes batched by style (one path per
 * colour and status), redrawn only when a node's look changes; above, the
 * packets batched by colour, redrawn every frame — no DOM element per drone,
 * no DOM work per heartbeat.
 * The cards and the self-healing table are DOM, updated at most twice a
 * second and only when something they show changed.
 *
 * The scrubber asks the server for the fleet as it was (`scrub`), and draws
 * that until it is dragged back to the end or "Back to live" is pressed.
 * window.swarmTopology exposes what tests and the benchmark read: node colours
 * (computed and sampled from the canvas), frames per second and update lag.
 */
(function () {
  "use strict";
  const LEVEL_COLOURS = ["#06b6d4", "#eab308", "#f59e0b", "#dc2626"];  // L0 cyan, L1 yellow, L2 amber, L3+ red
  const LEVEL_NAMES = ["L0 healthy", "L1 restart_service", "L2 hard_restart", "L3 reboot_container", "L4 alert_admin"];
  const OFFLINE_FILL = "#6b7280";
  const PACKET_MS = 900;
  const WAVE_KINDS = [["hb", "#22d3ee", "heartbeats"], ["po", "#a5b4fc", "pongs"], ["esc", "#f59e0b", "ladder steps"],
                      ["bs", "#4ade80", "build starts"], ["bf", "#c084fc", "build finishes"]];

  function levelColour(level) { return LEVEL_COLOURS[Math.min(Math.max(level || 0, 0), 3)]; }
  function nowSeconds() { return (performance.timeOrigin + performance.now()) / 1000; }

  const page = document.getElementById("topology-page");
  if (!page) { return; }
  const canvas = document.getElementById("topology-canvas");     // links, hub and nodes: redrawn on change
  const context = canvas.getContext("2d");
  const packetCanvas = document.getElementById("topology-packets");  // packets only: redrawn every frame
  const packetContext = packetCanvas.getContext("2d");
  const wave = document.getElementById("topology-wave");
  const waveContext = wave.getContext("2d");
  const track = document.getElementById("scrub-track");
  const trackContext = track.getContext("2d");
  const scrubber = document.getElementById("topology-scrubber");
  const scrubLabel = document.getElementById("scrub-label");
  const liveButton = document.getElementById("scrub-live");
  const tooltip = document.getElementById("topology-tooltip");
  const connection = document.getElementById("topology-connection");
  const drones = new Map();           // id -> drone (live state + position)
  let historic = null;                // Map id -> {s, l, p, w, b} while scrubbed
  let historicAt = null;
  let windowSeconds = 3600, waveSeconds = 900;
  let hourActivity = [];
  let events = [];                    // the self-healing table, newest first
  const packets = [];
  const activity = new Map();         // second -> {hb, po, ...}
  let layout = {hub: {x: 0, y: 0}, clusters: [], radius: 4, grid: null, gridSize: 24};
  let staticLayer = null;
  let dirtyDom = true, dirtyStatic = true, dirtyNodes = true;
  let socket = null, snapshotWanted = false, lastSnapshotAsk = 0;
  let scrubRequest = 0, lastScrubSent = 0, scrubPending = null;
  let hovered = null;
  const detailCache = new Map();
  const stats = {fps: 0, fpsSamples: [], frames: 0, lags: [], framesReceived: 0, heartbeats: 0};
  let pendingLag = [];

  // --- the socket -----------------------------------------------------------------------------
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(scheme + "://" + window.location.host + "/ws/topology/");
    socket.onopen = function () { connection.textContent = "live"; connection.className = "swarm-live-ok"; };
    socket.onclose = function () {
      connection.textContent = "reconnecting…"; connection.className = "";
      setTimeout(connect, 1000);
    };
    socket.onmessage = function (message) { receive(JSON.parse(message.data)); };
  }

  function send(message) { if (socket && socket.readyState === 1) { socket.send(JSON.stringify(message)); } }

  function receive(message) {
    if (message.type === "snapshot") { applySnapshot(message); }
    else if (message.type === "frame") { applyFrame(message); }
    else if (message.type === "state_at") { applyHistory(message); }
    else if (message.type === "detail") { detailCache.set(message.i, {at: Date.now(), detail: message}); showTooltip(); }
  }

  function applySnapshot(snapshot) {
    const now = nowSeconds();
    drones.clear();
    snapshot.drones.forEach(function (drone) {
      drone.hbAt = drone.hb === null ? null : now - drone.hb;
      drones.set(drone.i, drone);
    });
    events = snapshot.events || [];
    windowSeconds = snapshot.window || 3600;
    waveSeconds = snapshot.wave_seconds || 900;
    hourActivity = snapshot.hour || [];
    activity.clear();
    (snapshot.wave || []).forEach(function (row) { bump(row[0], row[1], row[2]); });
    snapshotWanted = false;
    relayout();
    dirtyDom = true; dirtyNodes = true;
    drawTrack();
  }

  function bump(second, kind, count) {
    let bucket = activity.get(second);
    if (!bucket) { bucket = {}; activity.set(second, bucket); }
    bucket[kind] = (bucket[kind] || 0) + count;
  }

  function askSnapshot() {
    if (Date.now() - lastSnapshotAsk < 2000) { return; }
    lastSnapshotAsk = Date.now();
    send({type: "snapshot"});
  }

  function applyFrame(frame) {
    stats.framesReceived += 1;
    const second = Math.floor(frame.t);
    Object.keys(frame.act || {}).forEach(function (kind) { bump(second, kind, frame.act[kind]); });
    const start = performance.now();
    (frame.hb || []).forEach(function (id, index) {
      const drone = drones.get(id);
      if (!drone) { snapshotWanted = true; return; }
      drone.hbAt = frame.t;
      if (drone.s === "stale" || drone.s === "offline") { drone.s = "online"; dirtyDom = true; dirtyNodes = true; }
      stats.heartbeats += 1;
      launch(drone, true, start + (index % 8) * 12);
    });
    if (frame.hb && frame.hb.length) { pendingLag.push(frame.h0); }
    (frame.po || []).forEach(function (id) { const drone = drones.get(id); if (drone) { launch(drone, false, start); } });
    (frame.ch || []).forEach(function (change) {
      const drone = drones.get(change.i);
      if (!drone) { snapshotWanted = true; return; }
      if ("s" in change) { drone.s = change.s; }
      if ("l" in change) { drone.l = change.l; }
      if ("p" in change) { drone.p = change.p; }
      if ("w" in change) { drone.w = change.w; }
      dirtyDom = true; dirtyNodes = true;
    });
    (frame.ev || []).forEach(function (event) {
      const drone = drones.get(event.i);
      events.unshift(Object.assign({n: drone ? drone.n : "#" + event.i}, event));
      hourMark(event.t);
      dirtyDom = true; dirtyNodes = true;
    });
    if (events.length > 30) { events.length = 30; }
    if (snapshotWanted) { askSnapshot(); }
  }

  function hourMark(at) {
    const minute = Math.floor(at / 60) * 60;
    const row = hourActivity.find(function (entry) { return entry[0] === minute; });
    if (row) { row[1].esc = (row[1].esc || 0) + 1; } else { hourActivity.push([minute, {esc: 1}]); }
    drawTrack();
  }

  // --- layout ---------------------------------------------------------------------------------
  function resize() {
    const ratio = window.devicePixelRatio || 1;
    function inner(element) {
      const computed = window.getComputedStyle(element);
      return element.clientWidth - parseFloat(computed.paddingLeft) - parseFloat(computed.paddingRight);
    }
    [[canvas, inner(canvas.parentElement), 560], [packetCanvas, inner(canvas.parentElement), 560],
     [wave, inner(wave.parentElement), 64],
     [track, inner(track.parentElement), 28]].forEach(function (entry) {
      const element = entry[0];
      element.width = Math.max(200, entry[1]) * ratio;
      element.height = entry[2] * ratio;
      element.style.width = Math.max(200, entry[1]) + "px";
      element.style.height = entry[2] + "px";
      element.getContext("2d").setTransform(ratio, 0, 0, ratio, 0, 0);
    });
    relayout();
    drawTrack();
    drawWave(true);  // resizing a canvas clears it
  }

  function relayout() {
    const width = canvas.width / (window.devicePixelRatio || 1), height = canvas.height / (window.devicePixelRatio || 1);
    const hub = {x: width / 2, y: height / 2};
    const groups = new Map();
    Array.from(drones.values()).sort(function (a, b) { return a.n < b.n ? -1 : 1; }).forEach(function (drone) {
      if (!groups.has(drone.g)) { groups.set(drone.g, []); }
      groups.get(drone.g).push(drone);
    });
    const names = Array.from(groups.keys()).sort();
    const clusters = [];
    const largest = Math.max(1, ...names.map(function (name) { return groups.get(name).length; }));
    let spacing, radius;
    if (names.length <= 1) {
      const members = names.length ? groups.get(names[0]) : [];
      const reach = Math.min(width, height) / 2 - 24;
      const offset = 10;
      spacing = Math.max(3, Math.min(30, reach / Math.sqrt(members.length + offset)));
      radius = Math.max(2.2, Math.min(spacing * 0.4, 11));
      members.forEach(function (drone, index) { place(drone, hub, spacing, index + offset, hub); });
      clusters.push({name: names[0] || "", x: hub.x, y: hub.y - Math.min(width, height) / 2 + 12, centre: hub,
                     members: members.length});
    } else {
      const ring = Math.min(width, height) * 0.32;
      const reach = Math.min(ring * Math.sin(Math.PI / names.length) * 0.95, Math.min(width, height) / 2 - ring - 8, 220);
      spacing = Math.max(2.6, Math.min(26, reach / Math.sqrt(largest + 2)));
      radius = Math.max(2, Math.min(spacing * 0.42, 10));
      names.forEach(function (name, index) {
        const angle = -Math.PI / 2 + index * 2 * Math.PI / names.length;
        const centre = {x: hub.x + ring * Math.cos(angle) * (width > height ? width / height * 0.8 : 1),
                        y: hub.y + ring * Math.sin(angle)};
        centre.x = Math.min(Math.max(centre.x, reach + 10), width - reach - 10);
        groups.get(name).forEach(function (drone, position) { place(drone, centre, spacing, position + 2, centre); });
        clusters.push({name: name, x: centre.x, y: centre.y - spacing * Math.sqrt(groups.get(name).length + 2) - 10,
                       centre: centre, members: groups.get(name).length});
      });
    }
    const grid = new Map(), size = Math.max(12, radius * 4);
    drones.forEach(function (drone) {
      const key = Math.floor(drone.x / size) + ":" + Math.floor(drone.y / size);
      if (!grid.has(key)) { grid.set(key, []); }
      grid.get(key).push(drone);
    });
    layout = {hub: hub, clusters: clusters, radius: radius, grid: grid, gridSize: size, width: width, height: height};
    dirtyStatic = true; dirtyNodes = true;
  }

  function place(drone, centre, spacing, index, via) {
    const angle = index * 2.39996323;  // the golden angle: an even sunflower spiral
    const distance = spacing * Math.sqrt(index);
    drone.x = centre.x + distance * Math.cos(angle);
    drone.y = centre.y + distance * Math.sin(angle);
    drone.via = via;
  }

  // --- drawing --------------------------------------------------------------------------------
  function drawStatic() {
    staticLayer = document.createElement("canvas");
    staticLayer.width = canvas.width; staticLayer.height = canvas.height;
    const layer = staticLayer.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    layer.setTransform(ratio, 0, 0, ratio, 0, 0);
    layer.strokeStyle = "rgba(148, 163, 184, 0.16)";
    layer.lineWidth = 1;
    layer.beginPath();
    drones.forEach(function (drone) { layer.moveTo(drone.x, drone.y); layer.lineTo(drone.via.x, drone.via.y); });
    layer.stroke();
    layer.strokeStyle = "rgba(148, 163, 184, 0.45)";
    layer.lineWidth = 2.5;
    layer.beginPath();
    layout.clusters.forEach(function (cluster) {
      if (cluster.centre !== layout.hub) { layer.moveTo(cluster.centre.x, cluster.centre.y); layer.lineTo(layout.hub.x, layout.hub.y); }
    });
    layer.stroke();
    layer.fillStyle = "#e2e8f0";
    layer.font = "12px system-ui, sans-serif";
    layer.textAlign = "center";
    layout.clusters.forEach(function (cluster) {
      if (cluster.name) { layer.fillText(cluster.name + " (" + cluster.members + ")", cluster.x, Math.max(12, cluster.y)); }
    });
    layer.beginPath();
    layer.fillStyle = "#1e293b"; layer.strokeStyle = "#38bdf8"; layer.lineWidth = 2;
    layer.arc(layout.hub.x, layout.hub.y, 16, 0, 2 * Math.PI);
    layer.fill(); layer.stroke();
    layer.fillStyle = "#e0f2fe"; layer.font = "bold 11px system-ui, sans-serif";
    layer.fillText("control plane", layout.hub.x, layout.hub.y + 30);
    dirtyStatic = false;
  }

  function shown(drone) {
    if (historic) {
      const then = historic.get(drone.i);
      if (!then) { return null; }
      return {s: then.s || "unknown", l: then.l, p: then.p, w: then.w, b: then.b};
    }
    return drone;
  }

  function style(state) {
    // The fill is always the level's colour; status shows as a ring around it (paused: the ring alone).
    // Drones on the ladder are drawn larger, on top: in a fleet of thousands they must not hide.
    const colour = levelColour(state.l), big = (state.l || 0) >= 1;
    switch (state.s) {
      case "offline": return {fill: colour, ring: OFFLINE_FILL, width: 3, dash: null, big: big};
      case "stale": return {fill: colour, ring: "#cbd5e1", width: 1.5, dash: [2, 2], big: big};
      case "paused": return {fill: null, ring: colour, width: 2.5, dash: null, big: big};
      case "draining": return {fill: colour, ring: "#f8fafc", width: 2, dash: [4, 2], big: big};
      default: return {fill: colour, ring: null, width: 0, dash: null, big: big};
    }
  }

  function drawNodes(now) {
    const buckets = new Map();
    drones.forEach(function (drone) {
      const state = shown(drone);
      if (!state) { return; }
      const look = style(state);
      const key = look.fill + "|" + look.ring + "|" + look.width + "|" + look.dash + "|" + look.big;
      if (!buckets.has(key)) { buckets.set(key, {look: look, members: []}); }
      buckets.get(key).members.push(drone);
    });
    Array.from(buckets.values()).sort(function (a, b) { return a.look.big - b.look.big; }).forEach(function (bucket) {
      const look = bucket.look;
      const radius = look.big ? Math.max(layout.radius * 1.6, layout.radius + 2) : layout.radius;
      if (look.fill) {
        context.fillStyle = look.fill;
        context.beginPath();
        bucket.members.forEach(function (drone) { context.moveTo(drone.x + radius, drone.y); context.arc(drone.x, drone.y, radius, 0, 2 * Math.PI); });
        context.fill();
      }
      if (look.ring) {
        const ringRadius = look.fill ? radius + look.width / 2 + 0.5 : radius - look.width / 2;
        context.strokeStyle = look.ring; context.lineWidth = look.width;
        context.setLineDash(look.dash || []);
        context.beginPath();
        bucket.members.forEach(function (drone) { context.moveTo(drone.x + ringRadius, drone.y); context.arc(drone.x, drone.y, ringRadius, 0, 2 * Math.PI); });
        context.stroke();
        context.setLineDash([]);
      }
    });
    const radius = layout.radius;
    if (radius >= 6) {
      context.fillStyle = "#cbd5e1"; context.font = "11px system-ui, sans-serif"; context.textAlign = "center";
      drones.forEach(function (drone) { context.fillText(drone.n, drone.x, drone.y + radius + 14); });
    }
    if (hovered) {
      context.strokeStyle = "#ffffff"; context.lineWidth = 2;
      context.beginPath(); context.arc(hovered.x, hovered.y, radius + 5, 0, 2 * Math.PI); context.stroke();
    }
  }

  function launch(drone, inbound, start) {
    if (historic || packets.length > 4000) { return; }
    packets.push({drone: drone, inbound: inbound, start: start});
  }

  function point(drone, inbound, progress) {
    // Along the drone's link: drone → its cluster's centre → the control plane (or the reverse for a pong).
    const legs = drone.via === layout.hub ? [[drone, layout.hub]] : [[drone, drone.via], [drone.via, layout.hub]];
    if (!inbound) { legs.reverse(); legs.forEach(function (leg, index) { legs[index] = [leg[1], leg[0]]; }); }
    const share = progress * legs.length, index = Math.min(legs.length - 1, Math.floor(share));
    const part = share - index, from = legs[index][0], to = legs[index][1];
    return {x: from.x + (to.x - from.x) * part, y: from.y + (to.y - from.y) * part};
  }

  function drawPackets(now) {
    const byColour = new Map();
    let kept = 0;
    for (let index = 0; index < packets.length; index += 1) {
      const packet = packets[index];
      const progress = (now - packet.start) / PACKET_MS;
      if (progress > 1) { continue; }
      packets[kept++] = packet;
      if (progress < 0) { continue; }
      const colour = packet.inbound ? levelColour((shown(packet.drone) || packet.drone).l) : "#e0e7ff";
      if (!byColour.has(colour)) { byColour.set(colour, []); }
      byColour.get(colour).push(point(packet.drone, packet.inbound, progress));
    }
    packets.length = kept;
    byColour.forEach(function (points, colour) {
      packetContext.fillStyle = colour;
      packetContext.beginPath();
      points.forEach(function (at) { packetContext.moveTo(at.x + 2.2, at.y); packetContext.arc(at.x, at.y, 2.2, 0, 2 * Math.PI); });
      packetContext.fill();
    });
  }

  let lastWaveSecond = 0;
  function drawWave(force) {
    const second = Math.floor(nowSeconds());
    if (!force && second === lastWaveSecond) { return; }
    lastWaveSecond = second;
    const width = wave.width / (window.devicePixelRatio || 1), height = wave.height / (window.devicePixelRatio || 1);
    waveContext.clearRect(0, 0, width, height);
    let peak = 1;
    const first = second - waveSeconds;
    for (let at = first; at <= second; at += 1) {
      const bucket = activity.get(at);
      if (bucket) { peak = Math.max(peak, WAVE_KINDS.reduce(function (sum, kind) { return sum + (bucket[kind[0]] || 0); }, 0)); }
    }
    const barWidth = width / waveSeconds;
    let bars = 0;
    WAVE_KINDS.forEach(function (kind, position) {
      waveContext.fillStyle = kind[1];
      for (let at = first; at <= second; at += 1) {
        const bucket = activity.get(at);
        if (!bucket || !bucket[kind[0]]) { continue; }
        let below = 0;
        for (let k = 0; k < position; k += 1) { below += bucket[WAVE_KINDS[k][0]] || 0; }
        const x = (at - first) * barWidth, top = height - (below + bucket[kind[0]]) / peak * (height - 4);
        waveContext.fillRect(x, top, Math.max(1, barWidth), bucket[kind[0]] / peak * (height - 4));
        bars += 1;
      }
    });
    stats.waveBars = bars;
    activity.forEach(function (bucket, at) { if (at < first - 5) { activity.delete(at); } });
    document.getElementById("wave-peak").textContent = peak + "/s peak";
  }

  function drawTrack() {
    if (!track.width) { return; }
    const width = track.width / (window.devicePixelRatio || 1), height = track.height / (window.devicePixelRatio || 1);
    trackContext.clearRect(0, 0, width, height);
    const end = nowSeconds(), start = end - windowSeconds;
    // Per minute: the samples' counts, and for the minutes the page has seen itself, its own (live) counts.
    const minutes = new Map(hourActivity.map(function (entry) { return [entry[0], Object.assign({}, entry[1])]; }));
    activity.forEach(function (bucket, second) {
      const minute = Math.floor(second / 60) * 60;
      const row = minutes.get(minute) || {};
      row.live = (row.live || 0) + (bucket.hb || 0);
      minutes.set(minute, row);
    });
    const rows = Array.from(minutes.entries()).map(function (entry) {
      return [entry[0], Object.assign({}, entry[1], {hb: Math.max(entry[1].hb || 0, entry[1].live || 0)})];
    });
    let peak = 1;
    rows.forEach(function (entry) { peak = Math.max(peak, entry[1].hb || 0); });
    rows.forEach(function (entry) {
      const x = (entry[0] - start) / windowSeconds * width, w = Math.max(2, 60 / windowSeconds * width - 1);
      if (entry[1].hb) { trackContext.fillStyle = "rgba(34, 211, 238, 0.55)"; trackContext.fillRect(x, height - entry[1].hb / peak * height, w, entry[1].hb / peak * height); }
      if (entry[1].esc) { trackContext.fillStyle = "#f59e0b"; trackContext.fillRect(x, 0, w, 5); }
    });
  }

  function frame() {
    const now = performance.now();
    stats.frames += 1;
    const width = canvas.width / (window.devicePixelRatio || 1), height = canvas.height / (window.devicePixelRatio || 1);
    if (dirtyStatic || !staticLayer) { drawStatic(); dirtyNodes = true; }
    if (dirtyNodes) {  // only when a node's look changed: most frames draw packets alone
      dirtyNodes = false;
      context.clearRect(0, 0, width, height);
      context.drawImage(staticLayer, 0, 0, width, height);
      drawNodes(now);
    }
    packetContext.clearRect(0, 0, width, height);
    drawPackets(now);
    drawWave(false);
    if (pendingLag.length) {
      const drawnAt = nowSeconds();
      pendingLag.forEach(function (heartbeatAt) { stats.lags.push(drawnAt - heartbeatAt); });
      if (stats.lags.length > 20000) { stats.lags.splice(0, stats.lags.length - 20000); }
      pendingLag = [];
    }
    window.requestAnimationFrame(frame);
  }

  // --- DOM: cards, table, tooltip (batched) -----------------------------------------------------
  function updateDom() {
    if (!dirtyDom) { return; }
    dirtyDom = false;
    let healthy = 0, escalating = 0, critical = 0, latencySum = 0, latencyCount = 0;
    drones.forEach(function (drone) {
      const state = shown(drone);
      if (!state) { return; }
      if (!state.l) { healthy += 1; } else if (state.l >= 4) { critical += 1; } else { escalating += 1; }
      if (typeof state.p === "number") { latencySum += state.p; latencyCount += 1; }
    });
    document.querySelector("[data-topo-card=healthy]").textContent = healthy;
    document.querySelector("[data-topo-card=escalating]").textContent = escalating;
    document.querySelector("[data-topo-card=critical]").textContent = critical;
    document.querySelector("[data-topo-card=latency]").textContent =
      latencyCount ? (latencySum / latencyCount).toFixed(1) + " ms" : "—";
    document.querySelector("[data-topo-card=total]").textContent = drones.size;
    const rows = (historic ? historicEvents : events).slice(0, 15).map(function (event) {
      const when = new Date(event.t * 1000);
      return "<tr><td>" + when.toLocaleTimeString([], {hour12: false}) + "</td><td>" + escapeHtml(event.n || "") +
             '</td><td><span class="topology-level" style="background:' + levelColour(event.l) + '">L' + event.l +
             "</span></td><td>" + escapeHtml(event.a) + "</td><td>" + escapeHtml(event.r) + "</td><td>" +
             escapeHtml(event.d || "") + "</td></tr>";
    });
    document.getElementById("healing-rows").innerHTML = rows.join("") ||
      '<tr><td colspan="6" class="swarm-muted">No ladder steps in this window.</td></tr>';
  }
  let historicEvents = [];

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]; });
  }

  function nearest(x, y) {
    if (!layout.grid) { return null; }
    const size = layout.gridSize, gx = Math.floor(x / size), gy = Math.floor(y / size);
    let best = null, bestDistance = (layout.radius + 5) * (layout.radius + 5);
    for (let dx = -1; dx <= 1; dx += 1) {
      for (let dy = -1; dy <= 1; dy += 1) {
        (layout.grid.get((gx + dx) + ":" + (gy + dy)) || []).forEach(function (drone) {
          const distance = (drone.x - x) * (drone.x - x) + (drone.y - y) * (drone.y - y);
          if (distance < bestDistance) { best = drone; bestDistance = distance; }
        });
      }
    }
    return best;
  }

  function showTooltip() {
    if (!hovered) { tooltip.hidden = true; return; }
    const state = shown(hovered) || {};
    const cached = detailCache.get(hovered.i);
    const detail = cached && !historic ? cached.detail : null;
    const age = hovered.hbAt ? Math.max(0, nowSeconds() - hovered.hbAt).toFixed(0) + " s ago" : "never";
    const lines = [
      "<strong>" + escapeHtml(hovered.n) + "</strong> <span class='swarm-muted'>" + escapeHtml(hovered.g) + "</span>",
      "status: " + escapeHtml(state.s || "?") + (historic ? " (at " + new Date(historicAt * 1000).toLocaleTimeString([], {hour12: false}) + ")" : ""),
      "level: " + (LEVEL_NAMES[state.l] || ("L" + state.l)),
      "ping latency: " + (typeof state.p === "number" ? state.p.toFixed(1) + " ms" : "—"),
      "WebSocket: " + (state.w ? "connected" : "down"),
      "running builds: " + (detail ? detail.b : (state.b === null || state.b === undefined ? "…" : state.b)),
      "last heartbeat: " + (historic ? "—" : age),
      "deploy state: " + (detail && detail.deploy ? escapeHtml(detail.deploy) : "no payload rollouts"),
    ];
    if (detail && detail.events && detail.events.length) {
      lines.push("last step: L" + detail.events[0].l + " " + escapeHtml(detail.events[0].a) + " (" + escapeHtml(detail.events[0].r) + ")");
    }
    tooltip.innerHTML = lines.join("<br>");
    tooltip.hidden = false;
    tooltip.style.left = Math.min(hovered.x + 14, layout.width - 240) + "px";
    tooltip.style.top = Math.max(hovered.y - 10, 0) + "px";
  }

  let detailTimer = null;
  canvas.addEventListener("mousemove", function (event) {
    const box = canvas.getBoundingClientRect();
    const found = nearest(event.clientX - box.left, event.clientY - box.top);
    if (found !== hovered) {
      hovered = found;
      dirtyNodes = true;
      canvas.style.cursor = found ? "pointer" : "default";
      clearTimeout(detailTimer);
      if (found && !historic) {
        detailTimer = setTimeout(function () {
          const cached = detailCache.get(found.i);
          if (!cached || Date.now() - cached.at > 2000) { send({type: "detail", id: found.i}); }
        }, 120);
      }
    }
    showTooltip();
  });
  canvas.addEventListener("mouseleave", function () { hovered = null; dirtyNodes = true; showTooltip(); });
  canvas.addEventListener("click", function () {
    if (hovered) { window.location.href = page.dataset.droneUrl.replace("0", String(hovered.i)); }
  });

  // --- the scrubber ----------------------------------------------------------------------------
  function scrubTo(value) {
    if (value >= windowSeconds) { goLive(); return; }
    const at = nowSeconds() - (windowSeconds - value);
    scrubLabel.textContent = "as at " + new Date(at * 1000).toLocaleTimeString([], {hour12: false}) +
                             " (" + Math.round(windowSeconds - value) + " s ago) — loading…";
    page.classList.add("topology-history");
    liveButton.hidden = false;
    scrubPending = at;
    if (Date.now() - lastScrubSent > 150) { flushScrub(); } else { setTimeout(flushScrub, 160); }
  }

  function flushScrub() {
    if (scrubPending === null) { return; }
    scrubRequest += 1;
    lastScrubSent = Date.now();
    send({type: "scrub", at: scrubPending, request: scrubRequest});
    scrubPending = null;
  }

  function applyHistory(answer) {
    if (answer.request !== scrubRequest || page.classList.contains("topology-history") === false) { return; }
    historic = new Map();
    answer.drones.forEach(function (row) { historic.set(row[0], {s: row[1], l: row[2], p: row[3], w: row[4], b: row[5]}); });
    historicAt = answer.at;
    historicEvents = (answer.events || []);
    scrubLabel.textContent = "as at " + new Date(answer.at * 1000).toLocaleTimeString([], {hour12: false}) + " (" +
      Math.round(nowSeconds() - answer.at) + " s ago)" +
      (answer.sample_at ? "" : " · levels from the ladder's events; no per-minute sample that close");
    dirtyDom = true; dirtyNodes = true;
    showTooltip();
  }

  function goLive() {
    historic = null; historicAt = null; scrubPending = null;
    scrubRequest += 1;  // answers still on their way are dropped
    scrubber.value = windowSeconds;
    page.classList.remove("topology-history");
    scrubLabel.textContent = "live";
    liveButton.hidden = true;
    dirtyDom = true; dirtyNodes = true;
  }

  scrubber.addEventListener("input", function () { scrubTo(Number(scrubber.value)); });
  scrubber.addEventListener("change", function () { scrubTo(Number(scrubber.value)); flushScrub(); });
  liveButton.addEventListener("click", goLive);

  // --- what tests and the benchmark read ---------------------------------------------------------
  function byName(name) {
    let found = null;
    drones.forEach(function (drone) { if (drone.n === name) { found = drone; } });
    return found;
  }

  function percentile(values, fraction) {
    if (!values.length) { return null; }
    const ordered = values.slice().sort(function (a, b) { return a - b; });
    return ordered[Math.min(ordered.length - 1, Math.max(0, Math.ceil(fraction * ordered.length) - 1))];
  }

  window.swarmTopology = {
    mode: function () { return historic ? "history" : "live"; },
    nodeColour: function (name) {
      const drone = byName(name), state = drone && shown(drone);
      return state ? levelColour(state.l) : null;
    },
    nodeState: function (name) { const drone = byName(name); return drone ? shown(drone) : null; },
    nodePixel: function (name) {
      const drone = byName(name);
      if (!drone) { return null; }
      const ratio = window.devicePixelRatio || 1;
      const data = context.getImageData(Math.round(drone.x * ratio), Math.round(drone.y * ratio), 1, 1).data;
      return "#" + [data[0], data[1], data[2]].map(function (v) { return v.toString(16).padStart(2, "0"); }).join("");
    },
    nodeShows: function (name, colour) {
      // Whether the canvas shows `colour` at the node's centre (a passing packet may cover it for a frame).
      const pixel = window.swarmTopology.nodePixel(name);
      if (!pixel) { return false; }
      return [1, 3, 5].every(function (at) {
        return Math.abs(parseInt(pixel.substr(at, 2), 16) - parseInt(colour.substr(at, 2), 16)) <= 12;
      });
    },
    nodePosition: function (name) { const drone = byName(name); return drone ? {x: drone.x, y: drone.y} : null; },
    drones: function () { return drones.size; },
    stats: function () {
      const samples = stats.fpsSamples.slice(-30);
      return {fps: stats.fps, fps_median: percentile(samples, 0.5), fps_min: samples.length ? Math.min.apply(null, samples) : null,
              frames_received: stats.framesReceived, heartbeats_drawn: stats.heartbeats, lag_samples: stats.lags.length,
              lag_p50: percentile(stats.lags, 0.5), lag_p99: percentile(stats.lags, 0.99), packets: packets.length,
              wave_bars: stats.waveBars || 0, wave_width: wave.width};
    },
    resetStats: function () { stats.lags = []; stats.fpsSamples = []; stats.heartbeats = 0; stats.framesReceived = 0; },
    windowSeconds: function () { return windowSeconds; },
  };

  setInterval(function () { stats.fps = stats.frames; stats.fpsSamples.push(stats.frames); stats.frames = 0; }, 1000);
  setInterval(function () { updateDom(); drawTrack(); }, 500);
  setInterval(function () { if (hovered) { showTooltip(); } }, 1000);
  window.addEventListener("resize", resize);
  resize();
  connect();
  window.requestAnimationFrame(frame);
})();
