/* Swarm log viewers: the control plane's own logs (/ws/logs/) and a drone's system log (/ws/syslog/<drone>/).
 *
 * Both take a filter from the form and show lines as the server forwards them;
 * at most MAX_LINES are kept on the page, and new lines are added in one batch
 * per animation frame. The control plane's lines are structured (time, level,
 * process, logger, message); a drone's system log lines are text.
 */
(function () {
  "use strict";
  const view = document.getElementById("log-view");
  if (!view) { return; }
  const MAX_LINES = 2000;
  const output = document.getElementById("log-lines");
  const status = document.getElementById("log-status");
  const form = document.getElementById("log-filter");
  const structured = view.dataset.kind === "control-plane";
  let socket = null, pending = [], scheduled = false, lines = 0, paused = false;

  function say(text, kind) { status.textContent = text; status.className = "log-status log-status-" + (kind || "info"); }

  function filters() {
    const values = {};
    new FormData(form).forEach(function (value, key) { values[key] = String(value); });
    return values;
  }

  function render(line) {
    const row = document.createElement("div");
    if (!structured) { row.className = "log-line"; row.textContent = line; return row; }
    row.className = "log-line log-level-" + String(line.level || "").toLowerCase();
    const time = (line.time || "").replace("T", " ").replace("+00:00", "Z");
    [["log-time", time], ["log-level", line.level], ["log-process", line.process], ["log-logger", line.logger],
     ["log-message", line.message + (line.exc ? "\n" + line.exc : "")]].forEach(function (part) {
      const cell = document.createElement("span");
      cell.className = part[0];
      cell.textContent = part[1] || "";
      row.appendChild(cell);
    });
    return row;
  }

  function flush() {
    scheduled = false;
    if (!pending.length) { return; }
    const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 30;
    const fragment = document.createDocumentFragment();
    pending.forEach(function (line) { fragment.appendChild(render(line)); });
    lines += pending.length;
    pending = [];
    output.appendChild(fragment);
    while (lines > MAX_LINES && output.firstChild) { output.removeChild(output.firstChild); lines -= 1; }
    if (atBottom && !paused) { output.scrollTop = output.scrollHeight; }
    document.getElementById("log-count").textContent = lines + " lines";
  }

  function add(newLines) {
    pending.push.apply(pending, newLines);
    if (!scheduled) { scheduled = true; window.requestAnimationFrame(flush); }
  }

  function clear() { output.textContent = ""; lines = 0; pending = []; }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(scheme + "://" + window.location.host + view.dataset.wsPath);
    socket.onopen = function () { say("live", "ok"); sendFilter(); };
    socket.onmessage = function (event) {
      const message = JSON.parse(event.data);
      if (message.type === "backlog") { clear(); add(message.lines); say("live · " + message.lines.length + " recent lines", "ok"); }
      else if (message.type === "lines") {
        add(message.lines);
        if (message.skipped) { add([structured ? {level: "WARNING", message: "[" + message.skipped + " lines skipped: too many at once]"} : "[" + message.skipped + " lines skipped: too many at once]"]); }
        if (status.className.indexOf("error") >= 0) { say("live", "ok"); }
      }
      else if (message.type === "reset") { clear(); }
      else if (message.type === "started") { say("live · " + message.source, "ok"); }
      else if (message.type === "unavailable" || message.type === "end") { say(message.detail, "error"); }
    };
    socket.onclose = function () { say("reconnecting…", "error"); setTimeout(connect, 2000); };
  }

  function sendFilter() {
    if (!socket || socket.readyState !== 1) { return; }
    const values = filters();
    socket.send(JSON.stringify(structured ? Object.assign({type: "filter"}, values) : {type: "filter", text: values.text || ""}));
  }

  let timer = null;
  form.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(sendFilter, 300); });
  form.addEventListener("submit", function (event) { event.preventDefault(); sendFilter(); });
  output.addEventListener("scroll", function () {
    paused = output.scrollTop + output.clientHeight < output.scrollHeight - 30;
  });
  connect();
  window.swarmLogView = {text: function () { return output.textContent; }, lines: function () { return lines; }};
})();
