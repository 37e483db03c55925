// The console's only script: refresh the page's <main> every few seconds without reloading
// (the server renders it; no framework), and ask before a form marked data-confirm posts.
// Text from messages is never put together here: the server's escaped HTML is swapped in.
"use strict";
(function () {
  const main = document.getElementById("main");
  const updated = document.getElementById("updated");

  function stamp() {
    if (updated) updated.textContent = "updated " + new Date().toLocaleTimeString();
  }

  function busy() {
    const el = document.activeElement;
    return document.hidden || (el && main.contains(el) && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName));
  }

  async function refresh() {
    if (busy()) return;
    try {
      const r = await fetch(window.location.href, { headers: { "X-Console-Partial": "1" }, credentials: "same-origin" });
      if (r.ok) { main.innerHTML = await r.text(); stamp(); }
    } catch (e) { /* the next tick tries again */ }
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  stamp();
  const seconds = main ? parseInt(main.dataset.refresh || "0", 10) : 0;
  if (seconds > 0) window.setInterval(refresh, seconds * 1000);
})();
