// Live job progress: poll the page's JSON every second while any job is active,
// and reload once when a job finishes (versions and rounds tables change then).
(function () {
  "use strict";
  const table = document.getElementById("jobs-table");
  if (!table) return;
  const url = table.dataset.pollUrl;
  const ACTIVE = new Set(["pending", "running"]);
  let known = new Map();
  table.querySelectorAll("tr[data-job-id]").forEach(function (row) {
    known.set(row.dataset.jobId, row.querySelector(".pill").textContent.trim());
  });

  function update(job) {
    const row = table.querySelector('tr[data-job-id="' + job.id + '"]');
    if (!row) return false;
    row.className = "job-" + job.status;
    const pill = row.querySelector(".pill");
    pill.textContent = job.status;
    pill.className = "pill pill-" + job.status;
    const bar = row.querySelector("progress");
    bar.value = job.progress;
    bar.textContent = String(job.progress);
    row.querySelector(".job-percent").textContent = Math.round(job.progress * 100) + "%";
    const message = row.querySelector(".job-message");
    if (message.firstChild && message.firstChild.nodeType === Node.TEXT_NODE) {
      message.firstChild.textContent = job.message + " ";
    }
    return true;
  }

  async function poll() {
    let anyActive = false;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const data = await response.json();
        let reload = false;
        for (const job of data.jobs) {
          const before = known.get(String(job.id));
          if (!update(job)) reload = reload || ACTIVE.has(job.status) || before === undefined;
          if (before && ACTIVE.has(before) && !ACTIVE.has(job.status)) reload = true;
          known.set(String(job.id), job.status);
          anyActive = anyActive || ACTIVE.has(job.status);
        }
        if (reload) {
          window.location.reload();
          return;
        }
      }
    } catch (error) {
      anyActive = true; // network hiccup: keep polling
    }
    window.setTimeout(poll, anyActive ? 1000 : 5000);
  }
  window.setTimeout(poll, 1000);
})();
