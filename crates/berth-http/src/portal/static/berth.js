// berth's portal works without this file; it adds copy buttons and
// confirmations before destructive forms.
document.addEventListener("click", async (e) => {
  const b = e.target.closest("button.copy");
  if (!b) return;
  const text = b.dataset.copy;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const t = document.createElement("textarea");
    t.value = text;
    document.body.appendChild(t);
    t.select();
    document.execCommand("copy");
    t.remove();
  }
  const was = b.textContent;
  b.textContent = "copied";
  setTimeout(() => { b.textContent = was; }, 1500);
});
document.addEventListener("submit", (e) => {
  const msg = e.target.dataset.confirm;
  if (msg && !window.confirm(msg)) e.preventDefault();
});
for (const a of document.querySelectorAll("a[data-back]")) {
  a.addEventListener("click", (e) => { e.preventDefault(); history.back(); });
}
