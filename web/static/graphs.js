// jobservice overview: the throughput graphs, drawn with uPlot from the page's own data.
// Each <figure data-graph> holds its counts as JSON (GET /stats/throughput's shape). The page
// redraws itself when the live stream says something changed (dashboard.js swaps <main>); the
// fresh figures carry fresh counts and are drawn as they appear: nothing here polls. Between
// two redraws no job has finished (else the stream would have said so), so each graph moves on
// by itself with zeros, on the browser's clock set to the server's.
"use strict";

const COLOURS = { completed: "#15803d", failed: "#b91c1c" };
const HEIGHT = 150;
const charts = new Map(); // figure -> { chart, data, step, skew }

// The counts per step (per second, minute or hour, as the caption says); x in seconds since
// the epoch, as uPlot wants.
function columns(graph) {
  const xs = graph.completed.map((_, i) => graph.start + i * graph.step);
  return [xs, graph.completed.slice(), graph.failed.slice()];
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
  const chart = new uPlot(options, data, figure);
  // the server's current step, as the page was rendered: the browser's clock may differ
  const skew = data[0][data[0].length - 1] - Math.floor(Date.now() / 1000 / graph.step) * graph.step;
  charts.set(figure, { chart, data, step: graph.step, skew });
  // what was drawn, for the eye of a test: how many steps of each series are above zero
  figure.dataset.completedPoints = String(graph.completed.filter((count) => count > 0).length);
  figure.dataset.failedPoints = String(graph.failed.filter((count) => count > 0).length);
  figure.dataset.last = String(data[0][data[0].length - 1]);
  figure.dataset.drawn = "true";
}

// Moves each graph on to the current step with zeros; forgets the figures a redraw replaced.
function advance() {
  for (const [figure, graph] of charts) {
    if (!figure.isConnected) {
      graph.chart.destroy();
      charts.delete(figure);
      continue;
    }
    const [xs, completed, failed] = graph.data;
    const now = Math.floor(Date.now() / 1000 / graph.step) * graph.step + graph.skew;
    if (now <= xs[xs.length - 1]) continue;
    // steps gone by, at most the whole graph (a tab in the background hears no timer)
    const gone = Math.min((now - xs[xs.length - 1]) / graph.step, xs.length);
    for (const column of graph.data) column.splice(0, gone);
    for (let i = gone - 1; i >= 0; i -= 1) {
      xs.push(now - i * graph.step);
      completed.push(0);
      failed.push(0);
    }
    graph.chart.setData(graph.data);
    figure.dataset.last = String(xs[xs.length - 1]);
    figure.dataset.advanced = String(Number(figure.dataset.advanced || 0) + gone);
  }
}

function drawAll() {
  if (typeof uPlot === "undefined") return;
  for (const figure of document.querySelectorAll("figure[data-graph]:not([data-drawn])")) draw(figure);
}

document.addEventListener("DOMContentLoaded", () => {
  drawAll();
  new MutationObserver(drawAll).observe(document.body, { childList: true });
  window.setInterval(advance, 1000); // the browser's own clock: no request is made
});
