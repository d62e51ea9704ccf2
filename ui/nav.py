"""The navigation bar every page carries — the shell and each panel alike.

It is a script for the page's `<head>`, not a Gradio component: the bar is drawn before Gradio
renders, and it reads the panels from the shell's `GET <prefix>/panels.json` (the panels the
signed-in user's role may open, found at run time, with the ones that are down marked as such),
redrawn every `refresh_s` seconds, with the count of alerts firing (linked to the panel that shows
them). So a panel knows nothing of the others, and when the shell is
down a panel still works, its bar saying so. The page's `#panels` element, where there is one (the
shell's), gets a card per panel from the same answer.
"""

from __future__ import annotations

import json

NAV_ID = "augment-nav"

_STYLE = """<style>
#augment-nav{display:flex;align-items:center;gap:1.2rem;padding:.55rem 1.2rem;background:#1f2937;color:#f9fafb;
  font:14px/1.4 system-ui,sans-serif;flex-wrap:wrap}
#augment-nav a{color:#f9fafb;text-decoration:none;padding:.2rem .5rem;border-radius:.3rem}
#augment-nav a:hover{background:#374151}
#augment-nav a.current{background:#4b5563;font-weight:600}
#augment-nav .brand{font-weight:700;font-size:15px;padding-left:0}
#augment-nav .links{display:flex;gap:.3rem;flex-wrap:wrap;flex:1}
#augment-nav .down{color:#fca5a5;padding:.2rem .5rem;cursor:help}
#augment-nav .warn{color:#fcd34d}
#augment-nav a.alerts{background:#b91c1c;font-weight:600}
#augment-nav span.alerts{color:#fca5a5}
#augment-nav form{display:inline;margin:0}
#augment-nav button{font:inherit;background:#374151;color:#f9fafb;border:1px solid #6b7280;border-radius:.3rem;
  padding:.15rem .6rem;cursor:pointer}
#panels .card{border:1px solid #d1d5db;border-radius:.5rem;padding:.8rem 1rem;margin:.6rem 0}
#panels .card.down{border-color:#fca5a5;background:#fef2f2}
#panels .card h3{margin:0 0 .3rem 0;font-size:1.1rem}
#panels .card .meta{color:#6b7280;font-size:.85rem}
#panels .card .reason{color:#b91c1c}
</style>"""

# A Gradio page runs its head's scripts twice (the <head>, then again from its config): once only.
_SCRIPT = """<script>
(() => {
  if (window.augmentNav) return;
  window.augmentNav = true;
  const prefix = %(prefix)s, navId = %(nav_id)s, refreshMs = %(refresh_ms)s;
  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const here = () => window.location.pathname.replace(/\\/+$/, "");
  let last = null;

  function bar() {
    let nav = document.getElementById(navId);
    if (!nav) {
      nav = el("nav", {id: navId, "aria-label": "augment"});
      nav.append(el("a", {class: "brand", href: prefix + "/"}, "augment"), el("div", {class: "links"}),
                 el("span", {id: "alerts"}), el("span", {id: "user"}));
      document.body.prepend(nav);
    }
    return nav;
  }

  function signOut(token) {
    const form = el("form", {method: "post", action: prefix + "/logout"});
    form.append(el("input", {type: "hidden", name: "csrf_token", value: token || ""}),
                el("button", {type: "submit"}, "Sign out"));
    return form;
  }

  function draw(answer, problem) {
    const nav = bar(), links = nav.querySelector(".links"), user = nav.querySelector("#user");
    if (answer) {
      links.replaceChildren(...answer.panels.map((p) => p.available
        ? el("a", {href: p.url + "/", class: here().startsWith(p.url) ? "current" : "",
                   title: `${p.title} · version ${p.version}`}, p.title)
        : el("span", {class: "down", title: p.reason}, `${p.title} (unavailable)`)));
      user.replaceChildren(`${answer.user} · ${answer.role} `, signOut(answer.csrf_token));
      nav.querySelector("#alerts").replaceChildren(...alerts(answer.alerts));
      const cards = document.getElementById("panels");
      if (cards) cards.replaceChildren(...(answer.panels.length ? answer.panels.map(card)
        : [el("p", {}, "No panels for your role.")]));
    }
    nav.querySelector(".warn")?.remove();
    if (problem) nav.insertBefore(el("span", {class: "warn", role: "status"}, problem), user);
  }

  function alerts(a) {
    if (!a) return [];
    if (a.error) return [el("span", {class: "alerts", role: "status"}, `⚠ ${a.error}`)];
    if (!a.firing) return [];
    const text = `⚠ ${a.firing} alert${a.firing === 1 ? "" : "s"} firing`;
    const attrs = {class: "alerts", role: "status", title: a.newest || ""};
    return [a.url ? el("a", {...attrs, href: a.url}, text) : el("span", attrs, text)];
  }

  function card(p) {
    const box = el("div", {class: p.available ? "card" : "card down", "data-panel": p.name});
    const title = el("h3");
    title.append(p.available ? el("a", {href: p.url + "/"}, p.title) : el("span", {}, `${p.title} (unavailable)`));
    box.append(title, el("div", {class: "meta"}, `${p.url}/ · for ${p.role} and above · version ${p.version}`));
    if (!p.available) box.append(el("div", {class: "reason", role: "alert"}, p.reason));
    return box;
  }

  async function refresh() {
    try {
      const response = await fetch(prefix + "/panels.json", {credentials: "same-origin", cache: "no-store",
                                                                headers: {accept: "application/json"}});
      if (!response.ok) throw new Error(`the shell answered ${response.status}`);
      last = await response.json();
      draw(last, null);
    } catch (error) {
      draw(last, `navigation unavailable: ${error.message}`);
    }
  }

  const start = () => { bar(); refresh(); setInterval(refresh, refreshMs); };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
</script>"""


def js_literal(value: object) -> str:
    """A JSON literal that cannot end the script element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def nav_head(prefix: str, refresh_s: float = 10.0) -> str:
    """The `<style>` and `<script>` of the bar, for a page's head; `prefix` is where the shell lives."""
    script = _SCRIPT % {"prefix": js_literal(prefix), "nav_id": js_literal(NAV_ID),
                        "refresh_ms": js_literal(int(refresh_s * 1000))}
    return _STYLE + script
