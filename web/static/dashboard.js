// jobservice dashboard: live job status over Server-Sent Events, and the upload form.
// Text from jobs is attacker-controlled: it is only ever set with textContent, never as HTML.
"use strict";

const FINISHED = new Set(["SUCCESS", "FAILURE", "CANCELLED"]);

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function field(root, name) {
  return root.querySelector(`[data-field="${name}"]`);
}

function setText(root, name, text) {
  const element = field(root, name);
  if (element) element.textContent = text;
}

function clock(iso) {
  if (!iso) return "—";
  return new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function summary(status) {
  switch (status.status) {
    case "STARTED": return `running since ${clock(status.started_at)} (attempt ${status.attempts})`;
    case "RETRY": return `retrying ${clock(status.next_attempt_at)}: ${status.error || ""}`;
    case "SUCCESS": return `finished ${clock(status.finished_at)}`;
    case "FAILURE": return status.error || "failed";
    case "CANCELLED": return status.error || "cancelled";
    default: return "waiting for a worker";
  }
}

function setBar(root, fraction) {
  const bar = field(root, "bar");
  if (!bar) return;
  bar.parentElement.classList.remove("hidden");
  bar.style.width = `${Math.round(Math.min(Math.max(fraction, 0), 1) * 100)}%`;
}

function showOutcome(root, status) {
  const box = field(root, "outcome") || field(document, "outcome");
  if (!box) return;
  box.replaceChildren();
  if (status.status === "SUCCESS") {
    const result = status.result;
    if (result && typeof result.thumbnail === "string") {
      const img = document.createElement("img");
      img.className = "thumb";
      img.alt = "thumbnail";
      img.src = `/dashboard/thumbnails/${encodeURIComponent(result.thumbnail)}`;
      box.append(img);
    }
    const pre = document.createElement("pre");
    pre.className = "code";
    pre.textContent = JSON.stringify(result, null, 2);
    box.append(pre);
  } else if (status.error) {
    const pre = document.createElement("pre");
    pre.className = "code error";
    pre.textContent = status.error || "failed";
    box.append(pre);
  }
}

function showStatus(root, status) {
  const badge = field(root, "status");
  if (badge) {
    badge.textContent = status.status;
    badge.className = `badge badge-${status.status.toLowerCase()}`;
  }
  setText(root, "summary", summary(status));
  setText(document, "status-text", status.status);
  if (status.attempts !== undefined) setText(document, "attempts", String(status.attempts));
  if (status.started_at) setText(document, "started_at", clock(status.started_at));
  if (status.finished_at) setText(document, "finished_at", clock(status.finished_at));
  if (status.status === "STARTED") setBar(root, 0.05);
  if (FINISHED.has(status.status)) {
    setText(root, "progress", "");
    root.classList.add(`done-${status.status.toLowerCase()}`);
    if (status.status === "SUCCESS") setBar(root, 1);
    showOutcome(root, status);
  }
}

function showProgress(root, progress) {
  const counted = progress.total ? ` (${progress.done}/${progress.total})` : "";
  setText(root, "progress", `${progress.step}${counted}`);
  if (progress.total) setBar(root, progress.done / progress.total);
}

// Follow one job until it finishes; returns the EventSource so callers may close it.
// onFinished runs when a job that was not finished when the page was drawn finishes.
function watch(jobId, root, onFinished) {
  const source = new EventSource(`/jobs/${encodeURIComponent(jobId)}/events`);
  const drawnUnfinished = !FINISHED.has(root.dataset.renderedStatus || "PENDING");
  source.addEventListener("status", (event) => {
    const status = JSON.parse(event.data);
    showStatus(root, status);
    if (FINISHED.has(status.status)) {
      source.close(); // else EventSource would reconnect once the server ends the stream
      if (drawnUnfinished && onFinished) onFinished(status);
    }
  });
  source.addEventListener("progress", (event) => showProgress(root, JSON.parse(event.data)));
  return source;
}

function setUpUpload(form) {
  const errorBox = document.getElementById("upload-error");
  const panel = document.getElementById("upload-job");
  let source = null;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.classList.add("hidden");
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const response = await fetch("/dashboard/upload", {
        method: "POST",
        body: new FormData(form),
        headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
        credentials: "same-origin",
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.error || `upload failed (${response.status})`);
      if (source) source.close();
      panel.classList.remove("hidden");
      panel.classList.remove("done-success", "done-failure");
      panel.dataset.liveJob = body.task_id;
      field(panel, "job-link").href = `/dashboard/jobs/${encodeURIComponent(body.task_id)}`;
      showStatus(panel, { status: "PENDING" });
      setText(panel, "progress", "");
      setBar(panel, 0);
      field(panel, "outcome").replaceChildren();
      source = watch(body.task_id, panel);
    } catch (error) {
      errorBox.textContent = error.message;
      errorBox.classList.remove("hidden");
    } finally {
      button.disabled = false;
    }
  });
}

// The overview redraws itself when the server says something changed (GET /dashboard/events):
// it fetches its own HTML again and swaps <main>; no timer polls anything.
function setUpLiveOverview() {
  const source = new EventSource("/dashboard/events");
  const mark = () => {
    const dot = document.querySelector("[data-live-overview]");
    if (dot) dot.classList.toggle("on", source.readyState === EventSource.OPEN);
  };
  let busy = false;
  let again = false;
  async function redraw() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      const response = await fetch(window.location.pathname, {
        headers: { Accept: "text/html" },
        credentials: "same-origin",
      });
      if (!response.ok || new URL(response.url).pathname !== window.location.pathname) {
        window.location.reload(); // signed out meanwhile: show the sign-in page
        return;
      }
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.querySelector("main");
      if (fresh) document.querySelector("main").replaceWith(fresh);
      mark();
    } finally {
      busy = false;
      if (again) {
        again = false;
        redraw();
      }
    }
  }
  source.addEventListener("changed", redraw);
  source.addEventListener("open", mark);
  source.addEventListener("error", mark);
}

document.addEventListener("DOMContentLoaded", () => {
  // delegated, so it also covers forms in a redrawn overview
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });
  for (const bar of document.querySelectorAll("[data-fraction]")) {
    bar.style.width = `${Math.round(Number(bar.dataset.fraction) * 100)}%`;
  }
  // The job page reloads once its job finishes, to show the attempts and the right buttons.
  for (const root of document.querySelectorAll("[data-live-job]")) {
    watch(root.dataset.liveJob, root, () => window.setTimeout(() => window.location.reload(), 1500));
  }
  const upload = document.getElementById("upload-form");
  if (upload) setUpUpload(upload);
  if (document.querySelector("[data-live-overview]")) setUpLiveOverview();
});
