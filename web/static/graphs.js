// jobservice overview: the throughput graphs, drawn with uPlot from the page's own data.
// Each <figure data-graph> holds its counts as JSON (GET /stats/throughput's shape). The page
// redraws itself when the live stream says something changed (dashboard.js swaps <main>); the
// fresh figures carry fresh counts and are drawn as they appear: nothing here polls.
"use strict";

const COLOURS = { completed: "#15803d", failed: "#b91c1c" };
const HEIGHT = 150;

// The counts per step (per second, minute or hour, as the caption says); x in seconds since
// the epoch, as uPlot wants.
function columns(graph) {
  const xs = graph.completed.map((_, i) => graph.start + i * graph.step);
  return [xs, graph.completed, graph.failed];
}

function line(label, colour) {
  return { label, stroke: colour, width: 1.5, points: { show: false } };
}

function draw(figure) {
  const graph = JSON.parse(figure.dataset.graph);
  const data = columns(graph);
  const options = {
    width: Math.max(figure.clientWidth, 280),
    height: HEIGHT,
    // whole jobs: the y axis starts at 0 and never goes below one job
    scales: { x: { time: true }, y: { range: (_, min, max) => [0, Math.max(max, 1) * 1.1] } },
    series: [{}, line("completed", COLOURS.completed), line("failed", COLOURS.failed)],
    axes: [{ stroke: "#6b7280" }, { stroke: "#6b7280", size: 44 }],
    legend: { show: false }, // the section's heading is the key
  };
  new uPlot(options, data, figure); // eslint-disable-line no-new
  // what was drawn, for the eye of a test: how many steps of each series are above zero
  figure.dataset.completedPoints = String(graph.completed.filter((count) => count > 0).length);
  figure.dataset.failedPoints = String(graph.failed.filter((count) => count > 0).length);
  figure.dataset.drawn = "true";
}

function drawAll() {
  if (typeof uPlot === "undefined") return;
  for (const figure of document.querySelectorAll("figure[data-graph]:not([data-drawn])")) draw(figure);
}

document.addEventListener("DOMContentLoaded", () => {
  drawAll();
  new MutationObserver(drawAll).observe(document.body, { childList: true });
});
