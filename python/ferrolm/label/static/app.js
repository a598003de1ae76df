// The labelling page. Model output is untrusted: it only ever reaches the page through
// textContent, never innerHTML (and the server's CSP forbids inline scripts besides).
"use strict";

const $ = (id) => document.getElementById(id);
const CHOICE_TEXT = { left: "A is better", right: "B is better", tie: "tie", skip: "skipped" };
const KEYS = { "1": "left", "2": "right", "3": "tie", s: "skip", S: "skip" };

// A tab keeps its id across reloads, so the server hands it back the pair it was showing.
const clientId = sessionStorage.getItem("clientId") || randomId();
sessionStorage.setItem("clientId", clientId);
// This tab's judgements, as {id, pair_id}: undoing one takes both.
let undoStack = JSON.parse(sessionStorage.getItem("undo") || "[]").filter((j) => j && j.pair_id);
let queue = []; // pairs this tab holds: queue[0] is shown, queue[1] is already generated and waiting
let busy = false; // a judgement or undo is on its way to the server
let epoch = 0; // bumped by every judgement/undo, so an older refill's answer is ignored
let pollTimer = null;

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = {};
  try { data = await response.json(); } catch (_) { /* not JSON: report the status */ }
  if (!response.ok) {
    const error = new Error(data.error || `HTTP ${response.status}`);
    error.status = response.status;
    error.data = data;
    throw error;
  }
  return data;
}

function say(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

function showProgress(r) {
  $("progress").textContent = `${r.labelled} / ${r.total} labelled`;
}

function render() {
  const pair = queue[0];
  document.body.classList.toggle("empty", !pair);
  document.body.dataset.pair = pair ? pair.id : "";
  showPrompt($("prompt"), pair ? pair.prompt : "");
  $("left-text").textContent = pair ? pair.left : "";
  $("right-text").textContent = pair ? pair.right : "";
  for (const button of document.querySelectorAll("button[data-choice]")) button.disabled = busy || !pair;
  $("undo").disabled = busy || undoStack.length === 0;
}

function saveUndo() {
  sessionStorage.setItem("undo", JSON.stringify(undoStack.slice(-100)));
}

async function refill() {
  clearTimeout(pollTimer);
  const mine = epoch;
  try {
    const r = await api("POST", "/api/pairs", { client: clientId, n: 2 });
    if (mine !== epoch || busy) return; // a judgement happened meanwhile: its own refill follows
    const shown = queue[0] && queue[0].id;
    queue = r.pairs;
    showProgress(r);
    if (r.done && r.failed) {
      say(`${r.labelled} of ${r.total} prompts are labelled; ${r.failed} could not be generated (the server's log says why).`, "error");
    } else if (r.done) {
      say(`All ${r.total} prompts are labelled. Thank you! Export them with \`ferrolm label export\`.`, "done");
    } else if (!queue.length && r.elsewhere) {
      say("The pairs left are open in another tab; they come here if that tab leaves them unlabelled.");
    } else if (!queue.length) {
      say("Generating the next pair…");
    }
    // Poll while nothing is shown, and (slower) until the next pair is ready too; then once a
    // minute, which renews this tab's hold on its pairs (an idle tab's go to others after 15).
    if (!r.done) pollTimer = setTimeout(refill, queue.length >= 2 ? 60000 : queue.length ? 1000 : r.elsewhere ? 5000 : 300);
    if ((queue[0] && queue[0].id) !== shown) render();
  } catch (e) {
    say(`Cannot reach the server (${e.message}); retrying…`, "error");
    pollTimer = setTimeout(refill, 2000);
  }
}

// Judgement `id` of `pair` goes on the undo list (once, if a retry), and the pair off the screen:
// the next one was fetched in advance and shows at once.
function judged(id, pair) {
  if (!undoStack.some((j) => j.id === id)) undoStack.push({ id, pair_id: pair.id });
  saveUndo();
  if (queue[0] === pair) queue.shift();
}

async function choose(choice) {
  const pair = queue[0];
  if (!pair || busy) return;
  busy = true;
  epoch += 1;
  clearTimeout(pollTimer);
  render();
  try {
    const labeller = $("labeller").value.trim() || undefined; // none: the server's --labeller
    const r = await api("POST", "/api/judgements",
      { pair_id: pair.id, client: clientId, choice, comment: $("comment").value, labeller });
    judged(r.id, pair);
    $("comment").value = "";
    showProgress(r);
    say(`Saved: ${CHOICE_TEXT[choice]}.`, "saved");
  } catch (e) {
    const earlier = e.status === 409 && e.data && e.data.judged;
    if (earlier) { // saved by an earlier answer of this tab's that never reached the page: kept to undo
      judged(earlier.id, pair);
      say(`Already saved: ${CHOICE_TEXT[earlier.choice]} (an earlier answer that had not reached this page; ` +
        "u undoes it).", "saved");
    } else if (e.status === 409) { // another tab has this pair, and likely the one held with it: ask again
      queue = [];
      say(`Not saved: ${e.message}. Fetching the next pair…`, "error");
    } else {
      say(`Not saved (${e.message}); choose again.`, "error");
    }
  } finally {
    busy = false;
    render();
    refill();
  }
}

async function undo() {
  const last = undoStack[undoStack.length - 1];
  if (last === undefined || busy) return;
  busy = true;
  epoch += 1;
  clearTimeout(pollTimer);
  render();
  try {
    const r = await api("POST", "/api/undo", { ...last, client: clientId });
    undoStack.pop();
    saveUndo();
    queue.unshift(r.pair);
    showProgress(r);
    say("Undone: that pair is back.", "saved");
  } catch (e) {
    if (e.status === 404) {
      undoStack.pop();
      saveUndo();
    }
    say(`Could not undo (${e.message}).`, "error");
  } finally {
    busy = false;
    render();
    refill();
  }
}

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement) {
    if (event.key === "Escape") event.target.blur();
    return; // typing a comment or a name is not labelling
  }
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (KEYS[event.key]) {
    event.preventDefault();
    choose(KEYS[event.key]);
  } else if (event.key === "u" || event.key === "U") {
    event.preventDefault();
    undo();
  }
});

for (const button of document.querySelectorAll("button[data-choice]")) {
  button.addEventListener("click", () => choose(button.dataset.choice));
}
$("undo").addEventListener("click", undo);
// A tab coming back into view renews its hold at once (hidden tabs' timers may be slowed).
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && !busy) refill();
});

// Several people may label on one server: each browser keeps its own name.
$("labeller").value = localStorage.getItem("labeller") || "";
$("labeller").addEventListener("change", () => localStorage.setItem("labeller", $("labeller").value.trim()));
api("GET", "/api/status").then((r) => {
  $("labeller").placeholder = r.labeller;
  showProgress(r);
}).catch((e) => say(`Cannot reach the server (${e.message}).`, "error"));
render();
refill();
