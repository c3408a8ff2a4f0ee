// Live preview of a project's guidelines: the server renders and sanitises them
// with the same function as the compare page (frontend.rendering.render_markdown),
// so the preview is exactly what annotators will see.
(function () {
  "use strict";
  const source = document.querySelector("textarea[data-md-source]");
  const target = document.getElementById("guidelines-preview");
  if (!source || !target) return;
  const form = source.form;
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  let timer = null;
  let sent = 0;
  window.pairloopPreview = { renders: 0, idle: true };

  async function render() {
    const seq = ++sent;
    window.pairloopPreview.idle = false;
    const body = new FormData();
    body.append("text", source.value);
    body.append("csrfmiddlewaretoken", csrf);
    try {
      const res = await fetch(target.dataset.previewUrl, {
        method: "POST", body, credentials: "same-origin",
      });
      const data = await res.json();
      if (seq !== sent) return; // a newer keystroke's answer wins
      if (res.ok) {
        target.innerHTML = data.html; // sanitised by the server (nh3)
      } else {
        target.textContent = data.error || "Preview unavailable.";
      }
      window.pairloopPreview.renders += 1;
    } catch (err) {
      target.textContent = "Preview unavailable.";
    } finally {
      if (seq === sent) window.pairloopPreview.idle = true;
    }
  }

  source.addEventListener("input", () => {
    clearTimeout(timer);
    window.pairloopPreview.idle = false;
    timer = setTimeout(render, 200);
  });
  render();
})();
