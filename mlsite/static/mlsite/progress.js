// Refreshes the job progress bars of an admin page without a reload: every bar carries
// data-job (the job id) and data-status; unfinished ones are polled once a second, and an
// element with data-job-status (the job list's status column) follows its job too. On a
// job's own page, the page reloads once its job finishes, to show the result links.
(function () {
  "use strict";
  var FINISHED = ["succeeded", "failed", "cancelled"];
  var script = document.currentScript;
  var endpoint = script.dataset.endpoint;
  var reloadOnFinish = script.dataset.reloadOnFinish === "1";

  function pending() {
    return Array.prototype.filter.call(
      document.querySelectorAll("progress[data-job]"),
      function (bar) { return FINISHED.indexOf(bar.dataset.status) === -1; }
    );
  }

  function update(bar, job) {
    bar.value = job.percent;
    bar.dataset.status = job.status;
    bar.title = job.rows_done + " of " + job.rows_total + " rows";
    var label = document.querySelector('[data-job-percent="' + bar.dataset.job + '"]');
    if (label) { label.textContent = job.percent + "%"; }
    // The job list's status column: left as rendered, a full bar sat beside "Queued".
    var status = document.querySelector('[data-job-status="' + bar.dataset.job + '"]');
    if (status) {
      status.textContent = job.label;
      status.style.color = job.colour;
    }
  }

  function poll() {
    var bars = pending();
    if (!bars.length) { return; }
    var ids = bars.map(function (bar) { return bar.dataset.job; });
    fetch(endpoint + "?ids=" + encodeURIComponent(ids.join(",")), {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : {jobs: {}}; })
      .then(function (body) {
        var finishedNow = false;
        bars.forEach(function (bar) {
          var job = body.jobs[bar.dataset.job];
          if (!job) { return; }
          update(bar, job);
          finishedNow = finishedNow || job.finished;
        });
        if (finishedNow && reloadOnFinish) {
          window.setTimeout(function () { window.location.reload(); }, 700);
          return;
        }
        window.setTimeout(poll, 1000);
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }

  window.setTimeout(poll, 1000);
})();
