// A prompt shown as text only (prompts and model output are untrusted: textContent, never
// innerHTML). A conversation (a list of {role, content} turns) shows each turn under its role.
"use strict";

function showPrompt(element, prompt) {
  element.replaceChildren();
  if (typeof prompt === "string") {
    element.textContent = prompt;
    return;
  }
  for (const turn of prompt) {
    const block = document.createElement("div");
    block.className = "turn";
    block.dataset.role = turn.role;
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = turn.role;
    block.append(role, document.createTextNode(turn.content));
    element.append(block);
  }
}
