/* Swarm admin: live pages without polling.
 *
 * A page that shows something that changes declares what it watches:
 *   <div id="swarm-live" data-topics="builds,drones" hidden></div>
 * and marks the parts that may change with data-live-region="<name>".
 * This script opens /ws/admin/live/?topics=… (swarm/core/consumers.py); each
 * notice means "what you show changed", and the page fetches itself again and
 * swaps the marked regions (at most once a second; the last notice always
 * leads to a refresh), so what it shows is what a reload would show.
 * Other scripts call SwarmLive.refresh() when their own socket tells them
 * something changed (the build page's log socket does).
 *
 * It also keeps relative ages ("12 s ago") current: <span class="swarm-age"
 * data-since="ISO time">.
 */
(function () {
  "use strict";
  const MIN_INTERVAL_MS = 1000;
  let lastRefresh = 0;
  let timer = null;
  let running = false;
  let again = false;

  function statusText(text, ok) {
    const element = document.getElementById("swarm-live-status");
    if (element) {
      element.textContent = text;
      element.classList.toggle("swarm-live-ok", !!ok);
    }
  }

  function checkedSelections(root) {
    return Array.from(root.querySelectorAll("input.action-select:checked")).map(function (box) { return box.value; });
  }

  function swapRegions(fresh) {
    let swapped = 0;
    document.querySelectorAll("[data-live-region]").forEach(function (region) {
      const name = region.getAttribute("data-live-region");
      const replacement = fresh.querySelector('[data-live-region="' + name + '"]');
      if (!replacement || replacement.innerHTML === region.innerHTML) { return; }
      if (region.contains(document.activeElement) && document.activeElement.matches("input[type=text], textarea, select")) {
        return;  // the operator is typing here: leave it alone until the next change
      }
      const selected = checkedSelections(region);
      region.innerHTML = replacement.innerHTML;
      selected.forEach(function (value) {
        const box = region.querySelector('input.action-select[value="' + CSS.escape(value) + '"]');
        if (box) { box.checked = true; box.closest("tr") && box.closest("tr").classList.add("selected"); }
      });
      swapped += 1;
      region.dispatchEvent(new CustomEvent("swarm:region-updated", {bubbles: true}));
    });
    if (swapped && window.Actions && document.querySelector("tr input.action-select")) {
      // Django's changelist actions bind to the rows that were there at load time: bind the new ones.
      window.Actions(document.querySelectorAll("tr input.action-select"), {
        actionContainer: "div.actions", counterContainer: "span.action-counter",
        allContainer: "div.actions span.all", acrossInput: "div.actions input.select-across",
        acrossQuestions: "div.actions span.question", acrossClears: "div.actions span.clear",
        allToggleId: "action-toggle", selectedClass: "selected"});
    }
    const title = fresh.querySelector("title");
    if (title) { document.title = title.textContent; }
    updateAges();
    return swapped;
  }

  function fetchAndSwap() {
    if (running) { again = true; return; }
    running = true;
    lastRefresh = Date.now();
    fetch(window.location.href, {credentials: "same-origin", headers: {"X-Swarm-Live": "1"}, cache: "no-store"})
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html");
        SwarmLive.refreshes += 1;
        SwarmLive.swapped += swapRegions(fresh);
      })
      .catch(function () { /* the next notice tries again */ })
      .finally(function () {
        running = false;
        if (again) { again = false; refresh(); }
      });
  }

  function refresh() {
    const wait = Math.max(0, lastRefresh + MIN_INTERVAL_MS - Date.now());
    if (timer) { return; }
    timer = setTimeout(function () { timer = null; fetchAndSwap(); }, wait);
  }

  function watch(topics) {
    let delay = 500;
    function connect() {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(scheme + "://" + window.location.host + "/ws/admin/live/?topics=" +
                                   encodeURIComponent(topics.join(",")));
      socket.onopen = function () { delay = 500; statusText("live", true); };
      socket.onmessage = function (event) {
        const message = JSON.parse(event.data);
        if (message.type === "changed") { SwarmLive.notices += 1; refresh(); }
      };
      socket.onclose = function (event) {
        if (event.code === 4403) { statusText("not live (no permission)", false); return; }
        statusText("reconnecting…", false);
        setTimeout(function () { refresh(); connect(); }, delay);  // catch up on what was missed meanwhile
        delay = Math.min(delay * 2, 10000);
      };
    }
    connect();
  }

  function age(seconds) {
    if (seconds < 1) { return "just now"; }
    if (seconds < 60) { return Math.floor(seconds) + " s ago"; }
    if (seconds < 3600) { return Math.floor(seconds / 60) + " min ago"; }
    if (seconds < 86400) { return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min ago"; }
    return Math.floor(seconds / 86400) + " d ago";
  }

  function updateAges() {
    const now = Date.now();
    document.querySelectorAll(".swarm-age[data-since]").forEach(function (element) {
      const since = Date.parse(element.getAttribute("data-since"));
      if (!isNaN(since)) { element.textContent = age(Math.max(0, (now - since) / 1000)); }
    });
  }

  const SwarmLive = {refresh: refresh, watch: watch, age: age, refreshes: 0, swapped: 0, notices: 0};
  window.SwarmLive = SwarmLive;

  document.addEventListener("DOMContentLoaded", function () {
    const marker = document.getElementById("swarm-live");
    if (marker && marker.dataset.topics) {
      watch(marker.dataset.topics.split(",").filter(Boolean));
    }
    updateAges();
    setInterval(updateAges, 5000);
  });
})();
