// scitq web UI behaviour. Every text from the server goes in with textContent, never as HTML.
"use strict";

// Buttons that ask before they act.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});

// "Select every task of the page".
document.addEventListener("change", (event) => {
  const all = event.target.closest("input[data-select-all]");
  if (!all) return;
  const form = all.closest("form");
  for (const box of form.querySelectorAll(`input[type=checkbox][name="${all.dataset.selectAll}"]`)) {
    box.checked = all.checked;
  }
});

// Pages that reload their content now and then, unless the user is typing or has ticked
// or changed something there.
function autoRefresh(main) {
  const seconds = Number(main.dataset.refresh);
  if (!seconds) return;
  let touched = false;
  main.addEventListener("input", () => { touched = true; });
  const busy = () => touched || main.contains(document.activeElement) &&
    document.activeElement.matches("input, select, textarea");
  const tick = async () => {
    if (document.visibilityState === "visible" && !busy()) {
      try {
        const response = await fetch(window.location.href, { credentials: "same-origin" });
        if (response.ok && response.url === window.location.href) {
          const doc = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = doc.getElementById("main");
          if (fresh && !busy()) {
            // What the user opened (a job's log) stays open.
            const open = Array.from(main.querySelectorAll("details[open][id]"), (d) => d.id);
            main.replaceChildren(...Array.from(fresh.childNodes).map((n) => document.adoptNode(n)));
            for (const id of open) {
              const details = document.getElementById(id);
              if (details) details.open = true;
            }
          }
        }
      } catch (_) { /* the next tick tries again */ }
    }
    window.setTimeout(tick, seconds * 1000);
  };
  window.setTimeout(tick, seconds * 1000);
}

// A task's output: followed live, searched.
function output() {
  const pre = document.getElementById("output");
  if (!pre) return;
  const found = document.getElementById("output-found");
  const search = document.getElementById("output-search");
  const matches = document.getElementById("output-matches");
  const follow = document.getElementById("output-follow");
  const live = document.getElementById("output-live");

  const applySearch = () => {
    const query = search.value;
    if (!query) {
      found.hidden = true;
      pre.hidden = false;
      matches.textContent = "";
      return;
    }
    const lines = pre.textContent.split("\n").filter((line) => line.includes(query));
    found.textContent = lines.join("\n");
    found.hidden = false;
    pre.hidden = true;
    matches.textContent = `${lines.length} matching line${lines.length === 1 ? "" : "s"}`;
  };
  search.addEventListener("input", applySearch);

  const url = pre.dataset.follow;
  if (!url) return;
  const source = new EventSource(url);
  let first = true;
  source.addEventListener("chunk", (event) => {
    const chunk = JSON.parse(event.data);
    if (first) {
      // The stream starts again from the execution's first byte: it replaces what the page had.
      pre.replaceChildren();
      first = false;
    }
    const span = document.createElement("span");
    span.className = chunk.s;
    span.textContent = chunk.d;
    pre.appendChild(span);
    if (follow && follow.checked) pre.scrollTop = pre.scrollHeight;
    if (search.value) applySearch();
  });
  const ended = (text) => {
    source.close();
    if (live) {
      live.textContent = text;
      live.classList.add("ended");
    }
  };
  source.addEventListener("failed", (event) => {
    const span = document.createElement("span");
    span.className = "err";
    span.textContent = JSON.parse(event.data).d;
    pre.appendChild(span);
  });
  source.addEventListener("end", () => ended("ended: reload for the final state"));
  if (follow) {
    follow.addEventListener("change", () => {
      if (follow.checked) pre.scrollTop = pre.scrollHeight;
    });
    pre.scrollTop = pre.scrollHeight;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const main = document.getElementById("main");
  if (main) autoRefresh(main);
  output();
});
