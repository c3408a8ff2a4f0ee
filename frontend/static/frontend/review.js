// Review queue: keyboard navigation and accept / reject. Without this script the page
// still works (every label has its own form); with it, no mouse is needed:
// j/k labels, J/K comparisons, a accept, r reject, n review note, c discussion note
// to the annotator (Ctrl+Enter sends it), ? help. After a decision the server moves
// the selection to the next pending label (this script tells it which one is next
// on the page as it was seen).

const help = document.getElementById("help");
const helpButton = document.getElementById("help-button");
const rows = () => Array.from(document.querySelectorAll(".review-label"));
const items = () => Array.from(document.querySelectorAll(".review-item"));
let current = null;

function select(row, scroll = true) {
  if (!row) return;
  if (current) current.classList.remove("is-current");
  current = row;
  row.classList.add("is-current");
  row.focus({ preventScroll: true });
  if (!scroll) return;
  row.scrollIntoView({ block: "nearest" });
  // Keep the comparison's responses in view when its first label is selected.
  const item = row.closest(".review-item");
  if (item && row === item.querySelector(".review-label")) {
    item.scrollIntoView({ block: "start" });
    row.scrollIntoView({ block: "nearest" });
  }
}

function moveLabel(step) {
  const all = rows();
  if (!all.length) return;
  const i = all.indexOf(current);
  const next = i < 0 ? 0 : Math.min(all.length - 1, Math.max(0, i + step));
  select(all[next]);
}

function moveComparison(step) {
  const all = items().filter((item) => item.querySelector(".review-label"));
  if (!all.length) return;
  const here = current ? current.closest(".review-item") : null;
  const i = all.indexOf(here);
  const next = i < 0 ? 0 : Math.min(all.length - 1, Math.max(0, i + step));
  select(all[next].querySelector(".review-label"));
}

// The next pending label after `row` in page order (with an annotator filter, that
// annotator's highlighted labels only, as the server's fallback does), or none.
function nextPendingAfter(row) {
  let all = rows();
  if (all.some((r) => r.classList.contains("highlight"))) {
    all = all.filter((r) => r === row || r.classList.contains("highlight"));
  }
  const i = all.indexOf(row);
  // A reviewer's own labels (data-own) are not theirs to judge: the server skips
  // them too.
  return all.slice(i + 1).find(
    (r) => r.classList.contains("state-pending") && !r.dataset.own,
  ) || null;
}

function review(state) {
  if (!current) return;
  const form = current.querySelector("form.review-form");
  const button = form && form.querySelector(`button[value="${state}"]`);
  if (!button) return;
  const next = nextPendingAfter(current);
  form.querySelector('input[name="next"]').value = next ? next.dataset.labelId : "";
  form.querySelectorAll("button").forEach((b) => (b.disabled = false));
  form.requestSubmit(button);
  // One decision per key press: a second press before the page reloads is ignored.
  form.querySelectorAll("button").forEach((b) => (b.disabled = true));
}

// A label's discussion thread is the table row right after it.
function discussionBox(row) {
  const thread = document.getElementById(`notes-${row.dataset.labelId}`);
  return thread && thread.querySelector("textarea.discussion-note");
}

function toggleHelp() {
  if (help.open) help.close();
  else help.showModal();
}
helpButton.addEventListener("click", toggleHelp);

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || target.tagName === "TEXTAREA") return true;
  return ["INPUT", "SELECT"].includes(target.tagName) &&
    !["radio", "checkbox", "submit", "button"].includes(target.type);
}

// Clicking or tabbing into a label (or its form) makes it the current one.
document.addEventListener("focusin", (event) => {
  const row = event.target instanceof Element && event.target.closest(".review-label");
  if (row && row !== current) {
    if (current) current.classList.remove("is-current");
    current = row;
    row.classList.add("is-current");
  }
});

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing) return;
  const target = event.target;
  if (isTyping(target)) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) &&
        target.matches("textarea.discussion-note")) {
      event.preventDefault();
      target.form.requestSubmit();
      return;
    }
    if (event.key === "Escape") {
      event.preventDefault();
      target.blur();
      if (current) current.focus({ preventScroll: true });
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (help.open) {
    if (event.key === "?") {
      event.preventDefault();
      help.close();
    }
    return;
  }
  const actions = {
    "?": toggleHelp,
    j: () => moveLabel(1),
    k: () => moveLabel(-1),
    J: () => moveComparison(1),
    K: () => moveComparison(-1),
    a: () => review("accepted"),
    r: () => review("rejected"),
    n: () => current && current.querySelector("textarea.review-note").focus(),
    c: () => {
      const box = current && discussionBox(current);
      if (!box) return;
      box.closest("details").open = true;
      box.focus();
    },
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
});

// After a decision the server redirects to #label-<id>: the next pending label
// (on whichever page holds it), or the decided one when nothing is left pending.
function boot() {
  const hash = decodeURIComponent(location.hash.slice(1));
  const target = hash ? document.getElementById(hash) : null;
  let row = null;
  if (target && target.classList.contains("review-label")) row = target;
  else if (target) row = target.querySelector(".review-label");
  // A fresh page keeps the filters in view; a return from a decision scrolls back.
  if (row) select(row);
  else select(rows()[0], false);
  window.pairloopReview = {
    get current() {
      return current ? Number(current.dataset.labelId) : null;
    },
  };
}

boot();
