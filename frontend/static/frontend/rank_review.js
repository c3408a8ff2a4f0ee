// Ranking review: the list (j/k select a ranking, Enter opens it) and one ranking
// (a accept, r reject, n review note, u back to the list, ? help), the keys of
// the pairwise review page. Without this script both pages still work: every
// button is a plain form. After a decision the server redirects to the next
// pending ranking.

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || target.tagName === "TEXTAREA") return true;
  return ["INPUT", "SELECT"].includes(target.tagName) &&
    !["radio", "checkbox", "submit", "button"].includes(target.type);
}

const help = document.getElementById("help");
const helpButton = document.getElementById("help-button");
const form = document.getElementById("review-form");
const links = () => Array.from(document.querySelectorAll("a.ranking-link"));

function toggleHelp() {
  if (!help) return;
  if (help.open) help.close();
  else help.showModal();
}
if (helpButton) helpButton.addEventListener("click", toggleHelp);

function moveLink(step) {
  const all = links();
  if (!all.length) return;
  const i = all.indexOf(document.activeElement);
  const next = i < 0 ? (step > 0 ? 0 : all.length - 1)
    : Math.min(all.length - 1, Math.max(0, i + step));
  all[next].focus();
  all[next].closest("tr").scrollIntoView({ block: "nearest" });
}

function review(state) {
  if (!form) return;
  const button = form.querySelector(`button[value="${state}"]`);
  if (!button || button.disabled) return;
  form.requestSubmit(button);
  // One decision per key press: a second press before the page loads is ignored.
  form.querySelectorAll("button").forEach((b) => (b.disabled = true));
}

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing) return;
  const target = event.target;
  if (isTyping(target)) {
    if (event.key === "Escape") {
      event.preventDefault();
      target.blur();
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (help && help.open) {
    if (event.key === "?") {
      event.preventDefault();
      help.close();
    }
    return;
  }
  const listLink = document.getElementById("list-link");
  const actions = {
    "?": toggleHelp,
    j: () => moveLink(1),
    k: () => moveLink(-1),
    a: () => review("accepted"),
    r: () => review("rejected"),
    n: () => form && form.querySelector("textarea.review-note").focus(),
    u: () => listLink && listLink.click(),
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
});
