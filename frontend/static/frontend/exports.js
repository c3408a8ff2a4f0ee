// Exports page: while a job is pending or running, reload every few seconds so its
// progress and, once done, its download links appear without a manual refresh.
const jobs = document.getElementById("export-jobs");
const seconds = Number(jobs && jobs.dataset.refresh);
if (seconds > 0) {
  setInterval(() => {
    // Do not throw away what the admin is typing into the form.
    const form = document.getElementById("export-form");
    if (!form || !form.contains(document.activeElement)) location.reload();
  }, seconds * 1000);
}
