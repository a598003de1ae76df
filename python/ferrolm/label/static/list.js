// The judgements page: every cell is filled with textContent (model output is untrusted).
"use strict";

const VERDICT = { left: "A better", right: "B better", tie: "tie", skip: "skipped" };

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function load() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/judgements");
    let data;
    try { data = await response.json(); } catch (_) { data = {}; } // not JSON (a server error): the status says
    if (!response.ok || !data.judgements) throw new Error(data.error || `HTTP ${response.status}`);
    document.getElementById("progress").textContent = `${data.labelled} / ${data.total} labelled`;
    const body = document.querySelector("#judgements tbody");
    for (const j of data.judgements) {
      const row = body.insertRow();
      row.dataset.verdict = j.verdict;
      cell(row, String(j.id));
      cell(row, j.time.replace("T", " ").replace("+00:00", " UTC"));
      cell(row, j.labeller);
      showPrompt(cell(row, "", "text"), j.prompt);
      cell(row, j.left, "text" + (j.verdict === "left" ? " chosen" : ""));
      cell(row, j.right, "text" + (j.verdict === "right" ? " chosen" : ""));
      cell(row, VERDICT[j.verdict] || j.verdict);
      cell(row, j.comment);
    }
    status.textContent = data.judgements.length ? "" : "No judgements yet.";
  } catch (e) {
    status.textContent = `Cannot load the judgements (${e.message}).`;
    status.className = "error";
  }
}

load();
