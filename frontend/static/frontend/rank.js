// Ranking page: a prompt and K responses; the annotator builds tiers, best first,
// from the keyboard and the page posts them to the REST API.
//
// - Keys: a digit n puts response n in the next place (again: moves it there);
//   "t" then a digit ties it with the last place; Backspace undoes the last
//   placement, Esc clears, Enter submits, "s" skips (gives the leased item back). Responses left out are unranked (a
//   top-k ranking), which the API reads as below every ranked one.
// - Content is HTML rendered and sanitised by the server (frontend/rendering.py),
//   the compare page's renderer; the CSP forbids inline scripts as a second line.

const root = document.getElementById("rank");
const $ = (id) => document.getElementById(id);

const cfg = {
  nextUrl: root.dataset.nextUrl,
  rankUrl: root.dataset.rankUrl,
  skipUrl: root.dataset.skipUrl,
};

const el = {
  work: $("work"),
  loading: $("loading"),
  empty: $("empty"),
  conversation: $("conversation"),
  responses: $("responses"),
  tiers: $("tiers"),
  unranked: $("unranked"),
  maxKey: $("max-key"),
  submit: $("submit"),
  clear: $("clear"),
  skip: $("skip"),
  formHint: $("form-hint"),
  errorStatus: $("error-status"),
  toast: $("toast"),
  guidelines: $("guidelines"),
  rankedCount: $("ranked-count"),
};

const state = {
  item: null,
  tiers: [], // lists of response numbers (1-based, as shown)
  history: [], // snapshots of tiers before each placement, for undo
  tieNext: false,
  busy: 0,
  shownAt: 0,
  ranked: 0,
};

// For tests (and the shared browser fixture): no request in flight.
window.pairloopStats = {
  get idle() {
    return state.busy === 0;
  },
};

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function request(url, options = {}) {
  state.busy += 1;
  try {
    return await fetch(url, {
      credentials: "same-origin",
      ...options,
      headers: {
        Accept: "application/json",
        "X-CSRFToken": csrfToken(),
        ...(options.body ? { "Content-Type": "application/json" } : {}),
      },
    });
  } finally {
    state.busy -= 1;
  }
}

function showError(text) {
  el.errorStatus.textContent = text;
  el.errorStatus.hidden = !text;
}

let toastTimer = null;
function toast(text) {
  el.toast.textContent = text;
  el.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.toast.hidden = true;
  }, 2500);
}

// ------------------------------------------------------------------ rendering

function ordinal(n) {
  const s = ["th", "st", "nd", "rd"];
  const v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

function renderItem(item) {
  const conversation = document.createDocumentFragment();
  for (const message of item.prompt.messages) {
    const li = document.createElement("li");
    li.className = `message role-${message.role.replace(/[^a-z_-]/gi, "")}`;
    const role = document.createElement("div");
    role.className = "role";
    role.textContent = message.role;
    const body = document.createElement("div");
    body.className = "md";
    body.innerHTML = message.html; // sanitised server-side
    li.append(role, body);
    conversation.append(li);
  }
  el.conversation.replaceChildren(conversation);
  const cards = document.createDocumentFragment();
  item.responses.forEach((response, i) => {
    const n = i + 1;
    const section = document.createElement("section");
    section.className = "response";
    section.id = `response-${n}`;
    section.dataset.number = String(n);
    const head = document.createElement("h2");
    head.id = `response-${n}-heading`;
    head.textContent = `Response ${n} `;
    const key = document.createElement("kbd");
    key.textContent = String(n);
    const badge = document.createElement("span");
    badge.className = "rank-badge";
    badge.id = `rank-badge-${n}`;
    head.append(key, " ", badge);
    const body = document.createElement("div");
    body.className = "md response-body";
    body.tabIndex = 0;
    body.setAttribute("aria-labelledby", head.id);
    body.innerHTML = response.html; // sanitised server-side
    section.append(head, body);
    cards.append(section);
  });
  el.responses.replaceChildren(cards);
  el.maxKey.textContent = String(item.responses.length);
}

function renderTiers() {
  const k = state.item ? state.item.responses.length : 0;
  const placed = new Set(state.tiers.flat());
  const items = state.tiers.map((tier, level) => {
    const li = document.createElement("li");
    li.dataset.tier = String(level);
    const names = tier.map((n) => `Response ${n}`).join(" = ");
    li.textContent = tier.length > 1 ? `${names} (tie)` : names;
    return li;
  });
  el.tiers.replaceChildren(...items);
  for (let n = 1; n <= k; n += 1) {
    const badge = $(`rank-badge-${n}`);
    const level = state.tiers.findIndex((tier) => tier.includes(n));
    const card = $(`response-${n}`);
    if (level < 0) {
      badge.textContent = "unranked";
      card.classList.remove("ranked");
    } else {
      const tie = state.tiers[level].length > 1 ? " (tie)" : "";
      badge.textContent = `${ordinal(level + 1)}${tie}`;
      card.classList.add("ranked");
    }
  }
  const left = [];
  for (let n = 1; n <= k; n += 1) if (!placed.has(n)) left.push(n);
  el.unranked.textContent = left.length
    ? `Unranked: ${left.map((n) => `Response ${n}`).join(", ")}`
    : "Every response is ranked.";
  el.formHint.textContent = state.tieNext ? "Tie: press the digit to tie with the last place." : "";
  el.submit.disabled = state.tiers.length === 0 || state.busy > 0;
}

// --------------------------------------------------------------- the ranking

function place(n) {
  if (!state.item || n < 1 || n > state.item.responses.length) return;
  state.history.push(state.tiers.map((tier) => [...tier]));
  const tieWithLast = state.tieNext;
  state.tieNext = false;
  let tiers = state.tiers.map((tier) => tier.filter((m) => m !== n));
  tiers = tiers.filter((tier) => tier.length > 0);
  if (tieWithLast && tiers.length > 0) tiers[tiers.length - 1].push(n);
  else tiers.push([n]);
  state.tiers = tiers;
  renderTiers();
}

function undo() {
  if (state.tieNext) state.tieNext = false;
  else if (state.history.length) state.tiers = state.history.pop();
  renderTiers();
}

function clearRanking() {
  state.tiers = [];
  state.history = [];
  state.tieNext = false;
  renderTiers();
}

async function submit() {
  if (!state.item || state.tiers.length === 0 || state.busy > 0) {
    if (state.tiers.length === 0) el.formHint.textContent = "Put at least one response in first place.";
    return;
  }
  const item = state.item;
  // The API's tiers are the indexes it sent (response n is index n - 1).
  const tiers = state.tiers.map((tier) => tier.map((n) => item.responses[n - 1].index));
  const body = JSON.stringify({
    tiers,
    duration_ms: Math.max(0, Math.round(performance.now() - state.shownAt)),
  });
  el.submit.disabled = true;
  let resp;
  try {
    resp = await request(cfg.rankUrl.replace("{id}", String(item.id)), {
      method: "POST",
      body,
    });
  } catch (err) {
    showError("Could not reach the server; your ranking is still here, press Enter to retry.");
    renderTiers();
    return;
  }
  if (resp.status === 200 || resp.status === 201) {
    state.ranked += 1;
    el.rankedCount.textContent = String(state.ranked);
    showError("");
    toast(resp.status === 201 ? "Ranked." : "Ranking replaced.");
    await loadNext();
    return;
  }
  let detail = `The server answered ${resp.status}.`;
  try {
    const data = await resp.json();
    detail = data.detail || (data.tiers && `tiers: ${data.tiers.join(" ")}`) || detail;
  } catch (err) {
    /* not JSON: keep the status line */
  }
  if (resp.status === 409) {
    toast("Enough others ranked this one meanwhile; here is the next.");
    await loadNext();
    return;
  }
  showError(detail);
  renderTiers();
}

// The item is leased to this annotator (ranking-next); skipping gives it back at
// once, and it is never served to them again.
async function skip() {
  if (!state.item || state.busy > 0) return;
  let resp;
  try {
    resp = await request(cfg.skipUrl.replace("{id}", String(state.item.id)), {
      method: "POST",
      body: JSON.stringify({ reason: "" }),
    });
  } catch (err) {
    showError("Could not reach the server; press s to try again.");
    return;
  }
  if (resp.ok) {
    showError("");
    toast("Skipped.");
    await loadNext();
    return;
  }
  let detail = `The server answered ${resp.status}.`;
  try {
    detail = (await resp.json()).detail || detail;
  } catch (err) {
    /* not JSON: keep the status line */
  }
  showError(detail);
}

async function loadNext() {
  el.loading.hidden = false;
  let resp;
  try {
    // POST: asking leases the item (as the API's ranking-next does).
    resp = await request(cfg.nextUrl, { method: "POST" });
  } catch (err) {
    el.loading.hidden = true;
    showError("Could not reach the server; reload to try again.");
    return;
  }
  el.loading.hidden = true;
  if (!resp.ok) {
    showError(`Could not load the next item (${resp.status}).`);
    return;
  }
  const data = await resp.json();
  state.item = data.item;
  state.tiers = [];
  state.history = [];
  state.tieNext = false;
  if (!state.item) {
    el.work.hidden = true;
    el.empty.hidden = false;
    return;
  }
  renderItem(state.item);
  renderTiers();
  el.empty.hidden = true;
  el.work.hidden = false;
  state.shownAt = performance.now();
  root.focus();
}

// ------------------------------------------------------------------ keyboard

function typing(target) {
  return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
  const key = event.key;
  if (/^[1-9]$/.test(key)) {
    event.preventDefault();
    place(Number(key));
  } else if (key === "t") {
    event.preventDefault();
    state.tieNext = state.tiers.length > 0;
    renderTiers();
  } else if (key === "Backspace") {
    event.preventDefault();
    undo();
  } else if (key === "Escape") {
    event.preventDefault();
    clearRanking();
  } else if (key === "Enter") {
    if (event.target instanceof HTMLButtonElement) return; // the button's own click
    event.preventDefault();
    submit();
  } else if (key === "s") {
    event.preventDefault();
    skip();
  } else if (key === "g") {
    event.preventDefault();
    el.guidelines.open = !el.guidelines.open;
  }
});

el.submit.addEventListener("click", () => submit());
el.clear.addEventListener("click", () => clearRanking());
el.skip.addEventListener("click", () => skip());

loadNext();
