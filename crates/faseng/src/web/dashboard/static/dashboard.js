// faseng dashboard: progressive enhancement only. Every page works without this script;
// with it, a running deployment's log and stages follow live, and a pending action refreshes.
"use strict";

(function () {
  // A deployment page: <pre id="log" data-events="…/events" data-from="N">.
  const log = document.getElementById("log");
  if (log && log.dataset.events) {
    const note = document.getElementById("log-follow");
    let following = true;
    let next = Number(log.dataset.from || "0");
    const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 8;
    const say = (text) => { if (note) note.textContent = text; };
    log.addEventListener("scroll", () => {
      const was = following;
      following = atBottom();
      if (was !== following) {
        say(following ? "" : "Paused: scroll to the bottom of the log to follow it again.");
      }
    });
    log.scrollTop = log.scrollHeight;
    const open = () => {
      const url = log.dataset.events + (log.dataset.events.includes("?") ? "&" : "?") + "from=" + next;
      const es = new EventSource(url);
      es.addEventListener("line", (e) => {
        next += 1;
        log.insertAdjacentHTML("beforeend", '<span class="line">' + e.data + "</span>");
        if (following) log.scrollTop = log.scrollHeight;
      });
      es.addEventListener("stages", (e) => {
        const flow = document.getElementById("stages");
        if (flow) flow.innerHTML = e.data;
      });
      es.addEventListener("state", (e) => {
        const badge = document.getElementById("run-state");
        if (badge) {
          badge.dataset.state = e.data;
          badge.textContent = e.data.replace("_", " ");
        }
      });
      es.addEventListener("end", () => {
        es.close();
        log.dataset.live = "ended";
        say("The deployment has finished.");
      });
      es.onerror = () => {
        // Start again from the lines already shown (the browser's own retry would repeat them).
        if (log.dataset.live === "ended") return;
        es.close();
        setTimeout(open, 2000);
      };
    };
    log.dataset.live = "following";
    open();
  }

  // An action waiting for chima: an element with data-refresh="<seconds>".
  const waiting = document.querySelector("[data-refresh]");
  if (waiting) {
    setTimeout(() => window.location.reload(), Number(waiting.dataset.refresh) * 1000);
  }
})();
