// The console's progressive enhancement; every flow works without it.
// Copy buttons, a confirmation before revoking, and an allowlist checked as it is typed
// (the server checks it again).
"use strict";

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function validIPv6(text) {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || !text.includes(":")) return false;
  const halves = text.split("::");
  if (halves.length > 2) return false;
  const groups = halves.flatMap((h) => (h === "" ? [] : h.split(":")));
  const last = groups[groups.length - 1];
  const embedsV4 = last !== undefined && last.includes(".");
  if (embedsV4 && !IPV4.test(last)) return false;
  const hexGroups = embedsV4 ? groups.slice(0, -1) : groups;
  if (!hexGroups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return false;
  const count = hexGroups.length + (embedsV4 ? 2 : 0);
  return halves.length === 2 ? count < 8 : count === 8;
}

// An address, or a range with a prefix length in bounds; the server also refuses host bits.
function entryProblem(entry) {
  const [address, prefix, extra] = entry.split("/");
  if (extra !== undefined) return `'${entry}' is not an IP address or CIDR range`;
  const v4 = IPV4.test(address);
  if (!v4 && !validIPv6(address)) return `'${entry}' is not an IP address or CIDR range`;
  if (prefix !== undefined) {
    const max = v4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) {
      return `'${entry}': the prefix length must be 0 to ${max}`;
    }
  }
  return null;
}

function checkAllowlist(field) {
  const live = document.getElementById(`${field.id}-live`);
  const problems = field.value
    .split(/[\s,]+/)
    .filter((e) => e !== "")
    .map(entryProblem)
    .filter((p) => p !== null);
  field.setCustomValidity(problems.length ? problems.join("; ") : "");
  field.setAttribute("aria-invalid", problems.length ? "true" : "false");
  if (live) live.textContent = problems.join("; ");
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(source.value);
        button.textContent = "Copied";
      } catch {
        source.select();
        button.textContent = "Press Ctrl+C to copy";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 3000);
    });
  }
  for (const field of document.querySelectorAll("textarea[data-allowlist]")) {
    field.addEventListener("input", () => checkAllowlist(field));
    checkAllowlist(field);
  }
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }
});
