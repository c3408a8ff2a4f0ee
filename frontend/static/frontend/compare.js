// Compare page: show a pair, take a label from the keyboard, move on at once.
//
// - Speed: while the annotator reads the current pair, the next one is already
//   leased and rendered server-side (prefetch), so after submit the page swaps
//   content locally without waiting for the network.
// - Nothing lost: every label (and skip) goes into an outbox kept in localStorage
//   before anything is sent; it is retried with the same idempotency key until the
//   server answers, so a reload, a dropped connection or a server restart neither
//   loses nor duplicates it.
// - Content is HTML rendered and sanitised by the server (frontend/rendering.py);
//   the CSP forbids inline scripts and handlers as a second line of defence.

const root = document.getElementById("compare");
const $ = (id) => document.getElementById(id);

const cfg = {
  userId: root.dataset.userId,
  nextUrl: root.dataset.nextUrl,
  labelUrl: root.dataset.labelUrl,
  skipUrl: root.dataset.skipUrl,
  undoUrl: root.dataset.undoUrl,
};
const OUTBOX_KEY = `pairloop.outbox.v1.user-${cfg.userId}`;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 4000;

const el = {
  work: $("work"),
  loading: $("loading"),
  empty: $("empty"),
  conversation: $("conversation"),
  a: $("response-a"),
  b: $("response-b"),
  form: $("label-form"),
  strength: $("strength"),
  strengthHint: $("strength-hint"),
  rationale: $("rationale"),
  formHint: $("form-hint"),
  skip: $("skip"),
  skipReason: $("skip-reason"),
  undo: $("undo"),
  outboxStatus: $("outbox-status"),
  errorStatus: $("error-status"),
  timer: $("timer"),
  help: $("help"),
  helpButton: $("help-button"),
  guidelines: $("guidelines"),
  toast: $("toast"),
};

const state = {
  current: null, // assignment payload on screen
  prefetched: null, // next assignment payload, already leased
  prefetching: null, // Promise of an in-flight prefetch
  loadingNext: false,
  exhausted: false,
  progress: null,
  // Latency of each swap to the next pair (ms, keypress -> painted), for tests.
  swaps: [],
};

// ---------------------------------------------------------------- utilities

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function newKey() {
  // crypto.randomUUID needs a secure context; getRandomValues works everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function postJson(url, body) {
  return fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json",
      "X-CSRFToken": csrfToken(),
    },
    body: JSON.stringify(body),
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function showError(message) {
  el.errorStatus.textContent = message;
  el.errorStatus.hidden = !message;
}

// ---------------------------------------------------- visible-time stopwatch

// Time on the current pair, counting only while the tab is visible.
const stopwatch = {
  accumulated: 0,
  since: null,
  reset() {
    this.accumulated = 0;
    this.since = document.hidden ? null : performance.now();
  },
  pause() {
    if (this.since !== null) {
      this.accumulated += performance.now() - this.since;
      this.since = null;
    }
  },
  resume() {
    if (this.since === null) this.since = performance.now();
  },
  elapsed() {
    const running = this.since === null ? 0 : performance.now() - this.since;
    return this.accumulated + running;
  },
};

document.addEventListener("visibilitychange", () => {
  if (document.hidden) stopwatch.pause();
  else stopwatch.resume();
});

function renderTimer() {
  const seconds = Math.floor(stopwatch.elapsed() / 1000);
  const m = Math.floor(seconds / 60);
  el.timer.textContent = `${m}:${String(seconds % 60).padStart(2, "0")}`;
}
setInterval(renderTimer, 1000);

// ------------------------------------------------------------------ outbox

function loadOutbox() {
  try {
    const items = JSON.parse(localStorage.getItem(OUTBOX_KEY) || "[]");
    return Array.isArray(items) ? items : [];
  } catch {
    return [];
  }
}

const outbox = {
  items: loadOutbox(),
  failing: false,
  authProblem: false,
  draining: null,
  wake: null, // resolves the current back-off wait early (e.g. on "online")
  save() {
    localStorage.setItem(OUTBOX_KEY, JSON.stringify(this.items));
    renderOutbox();
  },
  add(item) {
    this.items.push(item);
    this.save();
    this.drain();
  },
  assignmentIds() {
    return this.items.map((item) => item.assignmentId);
  },
  // One drain loop at a time; callers await the same promise.
  drain() {
    if (!this.draining) {
      this.draining = this.drainLoop().finally(() => {
        this.draining = null;
      });
    }
    return this.draining;
  },
  async drainLoop() {
    let delay = RETRY_MIN_MS;
    while (this.items.length) {
      const item = this.items[0];
      const outcome = await sendItem(item);
      if (outcome === "retry") {
        this.failing = true;
        renderOutbox();
        await new Promise((resolve) => {
          this.wake = resolve;
          setTimeout(resolve, delay);
        });
        this.wake = null;
        delay = Math.min(delay * 2, RETRY_MAX_MS);
        continue;
      }
      delay = RETRY_MIN_MS;
      // Another tab may have sent and removed it meanwhile; drop by key.
      this.items = this.items.filter((other) => other.key !== item.key);
      this.failing = this.items.length > 0 && this.failing;
      this.save();
    }
    this.failing = false;
    renderOutbox();
  },
};

// Returns "done" (acknowledged, or refused for good and reported) or "retry".
async function sendItem(item) {
  let response;
  try {
    response = await postJson(item.url, item.body);
  } catch {
    return "retry"; // network down or server restarting
  }
  if (response.ok) {
    if (item.kind === "label") noteDone(response.status === 201);
    else noteSkipped();
    return "done";
  }
  if (response.status === 401 || response.status === 403) {
    // Logged out (or CSRF cookie gone): keep the label and say so; logging in
    // again in another tab lets the retry through.
    outbox.authProblem = true;
    return "retry";
  }
  if (response.status >= 500 || response.status === 408 || response.status === 429) {
    return "retry";
  }
  // 4xx: the server refuses this label for good (lease lost to someone else,
  // validation). Retrying cannot help; tell the annotator rather than hide it.
  let detail = `HTTP ${response.status}`;
  try {
    detail = (await response.json()).detail || detail;
  } catch {
    /* not JSON */
  }
  const what = item.kind === "label" ? "A label" : "A skip";
  showError(`${what} for comparison #${item.comparisonId} was not saved: ${detail}`);
  return "done";
}

function renderOutbox() {
  const n = outbox.items.filter((item) => item.kind === "label").length;
  const pending = outbox.items.length;
  if (pending && outbox.failing) {
    const noun = n === 1 ? "label" : "labels";
    const what = n ? `${n} ${noun}` : `${pending} skip${pending === 1 ? "" : "s"}`;
    const verb = n === 1 || (!n && pending === 1) ? "is" : "are";
    const why = outbox.authProblem
      ? " — you seem to be logged out; log in again in another tab"
      : " — retrying";
    el.outboxStatus.textContent = `${what} waiting to be sent${why}. ${
      verb === "is" ? "It is" : "They are"
    } kept in this browser; nothing is lost.`;
    el.outboxStatus.hidden = false;
  } else {
    el.outboxStatus.hidden = true;
    el.outboxStatus.textContent = "";
    outbox.authProblem = false;
  }
}

window.addEventListener("online", () => outbox.wake && outbox.wake());
// Another tab changed the outbox (sent or added items): pick up its view.
window.addEventListener("storage", (event) => {
  if (event.key === OUTBOX_KEY) {
    outbox.items = loadOutbox();
    renderOutbox();
  }
});

// ---------------------------------------------------------------- progress

function renderProgress() {
  if (!state.progress) return;
  for (const node of root.querySelectorAll("[data-progress]")) {
    node.textContent = String(state.progress[node.dataset.progress] ?? "");
  }
}

function noteDone(created) {
  if (!state.progress || !created) return;
  state.progress.done_today += 1;
  state.progress.done_total += 1;
  state.progress.remaining = Math.max(0, state.progress.remaining - 1);
  renderProgress();
}

function noteSkipped() {
  if (!state.progress) return;
  state.progress.remaining = Math.max(0, state.progress.remaining - 1);
  renderProgress();
}

// ------------------------------------------------------------------- queue

// Ask the server for a lease. `exclude` lists leases this page already holds
// (on screen, or labelled but not acknowledged yet) so it hands out another one.
async function requestNext(exclude) {
  // The server accepts at most 20; more would mean a stuck outbox, and the most
  // recent ids are the ones that matter.
  const response = await postJson(cfg.nextUrl, { exclude: exclude.slice(-20) });
  if (!response.ok) {
    const error = new Error(`next: HTTP ${response.status}`);
    // 4xx other than timeouts/rate limits will not fix itself by retrying.
    error.fatal =
      response.status >= 400 &&
      response.status < 500 &&
      ![408, 429].includes(response.status);
    if (response.status === 401 || response.status === 403) {
      error.message = "you are logged out; log in again and reload this page";
    }
    throw error;
  }
  const body = await response.json();
  state.progress = body.progress;
  renderProgress();
  return body.assignment;
}

function heldIds() {
  const ids = outbox.assignmentIds();
  if (state.current) ids.push(state.current.assignment_id);
  if (state.prefetched) ids.push(state.prefetched.assignment_id);
  return ids;
}

// Build the DOM for a payload once, off-screen, so showing it is a cheap swap.
function buildView(payload) {
  const conversation = document.createDocumentFragment();
  for (const message of payload.prompt.messages) {
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
  const a = document.createElement("div");
  a.innerHTML = payload.a.html;
  const b = document.createElement("div");
  b.innerHTML = payload.b.html;
  return { conversation, a, b };
}

function prefetch() {
  if (state.prefetched || state.prefetching || state.exhausted || !state.current) {
    return state.prefetching;
  }
  state.prefetching = (async () => {
    try {
      // A label still in the outbox keeps its lease until the server has it; wait,
      // so the server does not count it against the two leases a page may hold.
      await outbox.drain();
      if (state.prefetched) return;
      const payload = await requestNext(heldIds());
      // The current pair may have been labelled meanwhile (state.current is then
      // null and the page is waiting): the lease is still good, keep it.
      const currentId = state.current && state.current.assignment_id;
      if (payload && payload.assignment_id !== currentId) {
        payload.view = buildView(payload);
        state.prefetched = payload;
      }
    } catch {
      /* the swap falls back to a direct fetch */
    } finally {
      state.prefetching = null;
    }
  })();
  return state.prefetching;
}

function resetForm() {
  el.form.reset();
  el.formHint.textContent = "";
  syncStrength();
}

function show(payload, startedAt) {
  state.current = payload;
  const view = payload.view || buildView(payload);
  payload.view = null;
  el.conversation.replaceChildren(view.conversation);
  el.a.replaceChildren(...view.a.childNodes);
  el.b.replaceChildren(...view.b.childNodes);
  el.a.scrollTop = 0;
  el.b.scrollTop = 0;
  resetForm();
  el.loading.hidden = true;
  el.empty.hidden = true;
  el.work.hidden = false;
  // Focus leaves the rationale box / buttons so the shortcuts apply at once.
  root.focus({ preventScroll: true });
  window.scrollTo(0, 0);
  stopwatch.reset();
  renderTimer();
  if (startedAt !== undefined) {
    // Two frames: the first runs before the paint that shows the new pair.
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        state.swaps.push(performance.now() - startedAt);
        root.dataset.lastSwapMs = state.swaps.at(-1).toFixed(1);
      }),
    );
  }
  prefetch();
}

function showEmpty() {
  state.current = null;
  el.work.hidden = true;
  el.loading.hidden = true;
  el.empty.hidden = false;
  root.dataset.state = "empty";
}

function showLoading() {
  state.current = null;
  el.work.hidden = true;
  el.empty.hidden = true;
  el.loading.hidden = false;
  el.loading.textContent = outbox.items.length
    ? "Waiting for the server to take your last label…"
    : "Loading the next comparison…";
}

// A prefetched pair whose lease is about to run out is not worth showing: the
// label could arrive after someone else took the slot.
const LEASE_MARGIN_MS = 30_000;

function takePrefetched() {
  const next = state.prefetched;
  state.prefetched = null;
  if (next && Date.parse(next.lease_expires_at) - Date.now() < LEASE_MARGIN_MS) {
    return null;
  }
  return next;
}

// Move on from the current pair: the prefetched one if ready, else fetch.
async function advance(startedAt) {
  const ready = takePrefetched();
  if (ready) {
    show(ready, startedAt);
    return;
  }
  showLoading();
  if (state.loadingNext) return;
  state.loadingNext = true;
  try {
    if (state.prefetching) await state.prefetching;
    const late = takePrefetched();
    if (late) {
      show(late, startedAt);
      return;
    }
    for (let delay = RETRY_MIN_MS; ; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
      try {
        await outbox.drain();
        const payload = await requestNext(outbox.assignmentIds());
        if (payload) show(payload, startedAt);
        else {
          state.exhausted = true;
          showEmpty();
        }
        return;
      } catch (error) {
        if (error.fatal) {
          el.loading.hidden = true;
          const kept = outbox.items.length ? " Unsent labels are kept in this browser." : "";
          showError(`Could not load the next comparison: ${error.message}.${kept}`);
          return;
        }
        await sleep(delay); // server unreachable: keep trying, the outbox is safe
      }
    }
  } finally {
    state.loadingNext = false;
  }
}

// ------------------------------------------------------------------- form

function selected(name) {
  const input = el.form.querySelector(`input[name="${name}"]:checked`);
  return input ? input.value : null;
}

function choose(name, value) {
  const input = el.form.querySelector(`input[name="${name}"][value="${value}"]`);
  if (!input || input.matches(":disabled")) return; // e.g. strength after a tie
  input.checked = true;
  el.formHint.textContent = "";
  syncStrength();
}

// Strength only qualifies a preference; tie and "both bad" prefer neither response,
// so they are sent without one (the API stores null for them).
function strengthNeeded() {
  const choice = selected("choice");
  return choice === "a" || choice === "b";
}

function syncStrength() {
  const needed = selected("choice") === null || strengthNeeded();
  el.strength.disabled = !needed;
  el.strengthHint.textContent = needed ? "" : "(not needed for tie / both bad)";
}

function submitLabel(startedAt) {
  if (!state.current) return;
  const choice = selected("choice");
  if (!choice) {
    el.formHint.textContent = "Pick A, B, tie or both bad first (1, 2, t, x).";
    return;
  }
  const strength = strengthNeeded() ? Number(selected("strength")) : null;
  if (strengthNeeded() && !strength) {
    el.formHint.textContent = "Pick how much better (q, w, e, r).";
    return;
  }
  const current = state.current;
  const key = newKey();
  outbox.add({
    key,
    kind: "label",
    assignmentId: current.assignment_id,
    comparisonId: current.comparison_id,
    url: cfg.labelUrl.replace("{id}", String(current.assignment_id)),
    body: {
      choice,
      ...(strength === null ? {} : { strength }),
      rationale: el.rationale.value.trim(),
      duration_ms: Math.max(1, Math.round(stopwatch.elapsed())),
      idempotency_key: key,
    },
  });
  toast(`Submitted: ${CHOICE_TEXT[choice]}${strength === null ? "" : ` (${strength})`}`);
  advance(startedAt);
}

// A brief confirmation that a key press took, for an annotator who is already
// reading the next pair. It says the answer is on its way (the outbox sends it and
// warns if it cannot), so it appears at once, not after the round trip.
const TOAST_MS = 1600;
const CHOICE_TEXT = { a: "A is better", b: "B is better", tie: "Tie", both_bad: "Both bad" };
let toastTimer = null;

function toast(text) {
  el.toast.textContent = text;
  el.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.toast.hidden = true;
  }, TOAST_MS);
}

function skipCurrent(startedAt) {
  if (!state.current) return;
  const current = state.current;
  outbox.add({
    key: newKey(),
    kind: "skip",
    assignmentId: current.assignment_id,
    comparisonId: current.comparison_id,
    url: cfg.skipUrl.replace("{id}", String(current.assignment_id)),
    body: { reason: el.skipReason.value },
  });
  toast(el.skipReason.value ? `Skipped: ${el.skipReason.value}` : "Skipped");
  advance(startedAt);
}

// Undo the last label (key u): once the outbox has delivered it, the server deletes
// it and leases its pair back; the pair comes back on screen with the old answer
// selected, and the pair that was showing comes next (its lease is kept).
let undoing = false;

async function undoLast() {
  if (undoing || !el.undo) return; // no button: the project has undo off
  undoing = true;
  try {
    await outbox.drain();
    const response = await postJson(cfg.undoUrl, {});
    let body = {};
    try {
      body = await response.json();
    } catch {
      /* not JSON */
    }
    if (!response.ok || !body.assignment) {
      toast(body.detail || `Undo failed: HTTP ${response.status}`);
      return;
    }
    if (state.current && state.current.assignment_id !== body.assignment.assignment_id) {
      state.prefetched = state.current;
    }
    state.exhausted = false;
    state.progress = body.progress;
    renderProgress();
    show(body.assignment);
    const answer = body.answer;
    choose("choice", answer.choice);
    if (answer.strength) choose("strength", String(answer.strength));
    el.rationale.value = answer.rationale || "";
    root.dataset.undone = String(answer.label_id);
    toast(`Undone: your label on comparison #${body.assignment.comparison_id}; answer it again`);
  } catch {
    toast("Undo failed: the server is unreachable; try again");
  } finally {
    undoing = false;
  }
}
if (el.undo) el.undo.addEventListener("click", () => undoLast());

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  submitLabel(event.timeStamp || performance.now());
});
el.form.addEventListener("change", syncStrength);
el.skip.addEventListener("click", (event) => skipCurrent(event.timeStamp));

// --------------------------------------------------------------- keyboard

function toggleHelp() {
  if (el.help.open) el.help.close();
  else el.help.showModal();
}
el.helpButton.addEventListener("click", toggleHelp);

const CHOICE_KEYS = { 1: "a", a: "a", 2: "b", b: "b", t: "tie", x: "both_bad" };
const STRENGTH_KEYS = { q: "1", w: "2", e: "3", r: "4" };

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || target.tagName === "TEXTAREA") return true;
  return target.tagName === "INPUT" && !["radio", "checkbox"].includes(target.type);
}

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing) return;
  const target = event.target;

  if (isTyping(target)) {
    if (event.key === "Escape") {
      event.preventDefault();
      target.blur();
      root.focus({ preventScroll: true });
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submitLabel(event.timeStamp);
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (el.help.open) {
    if (event.key === "?") {
      event.preventDefault();
      el.help.close();
    }
    return; // the dialog handles Esc and its own button
  }
  if (event.key === "?") {
    event.preventDefault();
    toggleHelp();
    return;
  }
  if (event.key === "g") {
    event.preventDefault();
    el.guidelines.open = !el.guidelines.open;
    return;
  }
  if (event.key === "u" || event.key === "U") {
    // Also when nothing is left to label: the last pair can still be taken back.
    event.preventDefault();
    undoLast();
    return;
  }
  if (!state.current) return;

  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (key in CHOICE_KEYS) {
    event.preventDefault();
    choose("choice", CHOICE_KEYS[key]);
  } else if (key in STRENGTH_KEYS) {
    event.preventDefault();
    choose("strength", STRENGTH_KEYS[key]);
  } else if (key === "s") {
    event.preventDefault();
    skipCurrent(event.timeStamp);
  } else if (key === "c") {
    event.preventDefault();
    el.rationale.focus();
  } else if (key === "Enter") {
    // Enter on a link, a <summary> or a button keeps its own meaning (the submit
    // button submits natively; Skip skips).
    if (target instanceof Element && target.closest("a, summary, button")) return;
    event.preventDefault();
    submitLabel(event.timeStamp);
  }
});

// -------------------------------------------------------------------- boot

// Read-only view of the page's state for the browser tests and for debugging.
window.pairloopStats = {
  swaps: state.swaps,
  get pending() {
    return outbox.items.length;
  },
  // No request in flight or queued: safe to tear the test database down.
  get idle() {
    return (
      outbox.items.length === 0 &&
      !outbox.draining &&
      !state.prefetching &&
      !state.loadingNext
    );
  },
  get prefetchReady() {
    return state.prefetched !== null;
  },
  get current() {
    const c = state.current;
    return c && { assignmentId: c.assignment_id, comparisonId: c.comparison_id };
  },
};

async function boot() {
  renderOutbox();
  renderTimer();
  await advance(undefined);
}

boot();
