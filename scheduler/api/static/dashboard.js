// The dashboard's script (a file, not inline: the pages' Content-Security-Policy allows no inline script).
const KEY = "scheduler-api-key";
function auth() { const k = sessionStorage.getItem(KEY); return k ? {"Authorization": "Bearer " + k} : {}; }
async function refresh() {
  const r = await fetch(location.pathname, {headers: auth(), cache: "no-store"});
  const doc = new DOMParser().parseFromString(await r.text(), "text/html");
  const live = doc.getElementById("live");
  if (live && r.status !== 401) document.getElementById("live").replaceWith(live);
  document.getElementById("key").hidden = r.status !== 401;
}
async function act(button) {
  if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
  const r = await fetch(button.dataset.url, {method: "POST", body: button.dataset.body || "{}",
    headers: {...auth(), "content-type": "application/json"}});
  const body = await r.json().catch(() => ({}));
  document.getElementById("said").textContent = r.ok ? (body.message || JSON.stringify(body)) : "refused: " + (body.detail || r.status);
  refresh();
}
document.addEventListener("click", (e) => { const b = e.target.closest("button[data-url]"); if (b) act(b); });
document.getElementById("key").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("key-input").value.trim());
  refresh();
});
if (document.body.dataset.needKey === "true" && sessionStorage.getItem(KEY)) refresh();
setInterval(refresh, Number(document.body.dataset.refreshMs));
