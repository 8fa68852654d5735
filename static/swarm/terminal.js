/* Swarm terminal: xterm.js (vendored) on /ws/terminal/<drone>/ (drones/terminal/consumer.py).
 *
 * Keystrokes go out as binary frames, output comes back as binary frames;
 * JSON text frames carry `resize` (from here) and `opened`, `exit`, `notice`,
 * `error`, `resized` (from the server). The server records the session; this
 * page has no say in it.
 */
(function () {
  "use strict";
  const box = document.getElementById("terminal-box");
  if (!box) { return; }
  const status = document.getElementById("terminal-status");
  const term = new Terminal({cursorBlink: true, fontSize: 14, scrollback: 5000,
                             fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
                             theme: {background: "#0b1220"}});
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const encoder = new TextEncoder();
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const url = scheme + "://" + window.location.host + box.dataset.wsPath + "?cols=" + term.cols + "&rows=" +
              term.rows + "&transport=" + encodeURIComponent(box.dataset.transport);
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  let ended = false;

  function say(text, kind) {
    status.textContent = text;
    status.className = "terminal-status terminal-status-" + (kind || "info");
  }

  socket.onopen = function () { say("connecting to " + box.dataset.drone + "…"); };
  socket.onmessage = function (event) {
    if (typeof event.data !== "string") { term.write(new Uint8Array(event.data)); return; }
    const message = JSON.parse(event.data);
    if (message.type === "opened") {
      say("connected to " + message.drone + (message.transport === "ssh" ? " over SSH" : " through its agent") +
          (message.pid ? " (shell pid " + message.pid + ")" : "") + " · recorded", "ok");
      box.dataset.session = message.session;
      term.focus();
    } else if (message.type === "exit") {
      ended = true;
      const code = message.exit_status === null || message.exit_status === undefined ? "" : ", exit status " + message.exit_status;
      say("session ended: " + message.reason + code + (message.recording ? " · recording saved" : ""), "ended");
      term.write("\r\n\x1b[2m[session ended: " + message.reason + code + "]\x1b[0m\r\n");
      const link = document.getElementById("terminal-recording");
      if (link && box.dataset.session) {
        link.href = box.dataset.sessionUrl.replace("00000000000000000000000000000000", box.dataset.session);
        link.hidden = false;
      }
    } else if (message.type === "notice") {
      term.write("\r\n\x1b[33m[" + message.detail + "]\x1b[0m\r\n");
    } else if (message.type === "error") {
      say(message.detail, "error");
    }
  };
  socket.onclose = function (event) {
    if (!ended) {
      const reasons = {4401: "log in first", 4403: "you may not open a terminal on this drone", 4404: "no such drone"};
      say("disconnected" + (reasons[event.code] ? ": " + reasons[event.code] : " (" + event.code + ")"), "error");
    }
  };
  term.onData(function (data) { if (socket.readyState === 1) { socket.send(encoder.encode(data)); } });
  term.onBinary(function (data) {
    if (socket.readyState !== 1) { return; }
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i += 1) { bytes[i] = data.charCodeAt(i) & 255; }
    socket.send(bytes);
  });
  term.onResize(function (size) {
    if (socket.readyState === 1) { socket.send(JSON.stringify({type: "resize", cols: size.cols, rows: size.rows})); }
  });
  window.addEventListener("resize", function () { fit.fit(); });

  window.swarmTerminal = {
    term: term, socket: socket,
    text: function () {
      const buffer = term.buffer.active, lines = [];
      for (let i = 0; i < buffer.length; i += 1) { lines.push(buffer.getLine(i).translateToString(true)); }
      return lines.join("\n");
    },
    ended: function () { return ended; },
  };
})();
