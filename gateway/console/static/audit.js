// The auditor pages: the audit log search with a Verify button per entry, the checkpoints of
// every log, and the evidence bundle download (here and on an incident's page). Entries, proofs
// and signed notes come from the console's API; verify.js checks them here, in the browser,
// with the verifier key this browser holds, so the auditor need not trust the console.
"use strict";
(function () {
  const { t, apply } = window.DutyLinkI18n;
  const body = document.body;
  const { element, showProblem } = window.DutyLinkPage;
  const { when } = window.DutyLinkPage;
  const getJson = (url) => window.DutyLinkPage.getJson(url, t("audit.denied"));
  const KEYS = "dutylink.audit.keys"; // {gateway id: verifier key string}
  const GATEWAY = "dutylink.audit.gateway"; // the log last searched
  const GATEWAYS = "dutylink.audit.gateways"; // the checkpoints page's list
  const configured = {}; // the console's configured keys: offered, never used unasked

  function storedKeys() {
    try { return JSON.parse(window.localStorage.getItem(KEYS) || "{}") || {}; } catch (error) { return {}; }
  }

  function keyOf(gateway) { return storedKeys()[gateway] || ""; }

  // --- the key box ------------------------------------------------------------------------

  function keyBox(currentGateway) {
    const gatewayInput = document.getElementById("key-gateway");
    const input = document.getElementById("key-input");
    const status = document.getElementById("key-status");
    const useDefault = document.getElementById("key-default");

    function show() {
      const gateway = gatewayInput.value.trim();
      input.value = keyOf(gateway);
      status.textContent = input.value ? t("key.stored") : t("key.none");
      useDefault.hidden = !configured[gateway];
    }

    async function save(text) {
      const gateway = gatewayInput.value.trim();
      try {
        await window.DutyLinkVerify.parseKey(text); // refuse a key that is not one
      } catch (error) {
        status.textContent = t("key.bad") + " " + error.message;
        return;
      }
      const keys = storedKeys();
      keys[gateway] = text.trim();
      window.localStorage.setItem(KEYS, JSON.stringify(keys));
      show();
      document.dispatchEvent(new CustomEvent("dutylink:key"));
    }

    document.getElementById("key-save").addEventListener("click", () => save(input.value));
    useDefault.addEventListener("click", () => save(configured[gatewayInput.value.trim()] || ""));
    gatewayInput.addEventListener("change", show);
    gatewayInput.value = currentGateway;
    show();
    return { show, set(gateway) { gatewayInput.value = gateway; show(); } };
  }

  // The logs there are and the console's configured keys: gateway ids for the lists.
  async function knownLogs() {
    try {
      const answer = await getJson("/api/audit/logs");
      Object.assign(configured, answer.keys || {});
      const list = document.getElementById("known-gateways");
      if (list) list.replaceChildren(...answer.gateways.map((id) => element("option", null, { value: id })));
      return answer.gateways;
    } catch (error) {
      return [];
    }
  }

  // --- verification results ---------------------------------------------------------------

  function verdict(results) {
    const ok = results.every((result) => result.ok);
    const list = element("ul", null, { class: "checks", "data-testid": "verify-result", "data-ok": String(ok) });
    for (const result of results) {
      const item = element("li", null, { "data-testid": "check-" + result.id, "data-ok": String(result.ok) });
      item.classList.add(result.ok ? "pass" : "fail");
      item.appendChild(element("span", result.ok ? "✓" : "✗", { class: "mark" }));
      item.appendChild(element("span", t("check." + result.id), { class: "what" }));
      item.appendChild(element("span", result.reason, { class: "reason" }));
      list.appendChild(item);
    }
    return list;
  }

  // --- evidence bundles -----------------------------------------------------------------------

  async function downloadBundle(incident, gateway, problemId) {
    showProblem("", problemId);
    const query = new URLSearchParams({ incident, gateway });
    const key = keyOf(gateway);
    if (key) query.set("key", key);
    const response = await fetch("/api/audit/bundle?" + query.toString(), { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      let message = String(response.status);
      try { message = (await response.json()).error || message; } catch (error) { /* not JSON */ }
      showProblem((response.status === 403 ? t("audit.denied") + " " : "") + message, problemId);
      return;
    }
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    const link = element("a", null, { download: name ? name[1] : "bundle.tar.gz" });
    link.href = URL.createObjectURL(await response.blob());
    document.body.appendChild(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  }

  // --- the audit log search -------------------------------------------------------------------

  function auditPage() {
    const form = document.getElementById("audit-filters");
    const rows = document.getElementById("audit-rows");
    const more = document.getElementById("audit-more");
    const bundleButton = document.getElementById("audit-bundle");
    let next = 0;
    let shownGateway = "";
    const box = keyBox(window.localStorage.getItem(GATEWAY) || "");

    function query(start) {
      const chosen = new URLSearchParams();
      for (const name of ["gateway", "agency", "event", "incident", "action", "from", "to"]) {
        const value = form.elements[name].value.trim();
        if (value) chosen.set(name, value);
      }
      chosen.set("start", String(start));
      return chosen;
    }

    async function verifyRow(entry, cell, button) {
      button.disabled = true;
      const old = cell.querySelector('[data-testid="verify-result"]');
      if (old) old.remove();
      try {
        const relayed = await getJson("/api/audit/proof?" + new URLSearchParams({ gateway: shownGateway, index: String(entry.index) }));
        const gateway = relayed.checkpoint.gateway_id || shownGateway;
        cell.appendChild(verdict(await window.DutyLinkVerify.verifyEntry(relayed, keyOf(gateway))));
      } catch (error) {
        cell.appendChild(verdict([{ id: "proof", ok: false, reason: error.message }]));
      } finally {
        button.disabled = false;
      }
    }

    function row(stored) {
      const entry = stored.entry || {};
      const tr = element("tr", null, { "data-testid": "audit-entry", "data-index": String(stored.index) });
      const action = (entry.action || "").replace("AUDIT_ACTION_", "");
      const outcome = (entry.outcome || "").replace("AUDIT_OUTCOME_", "");
      const values = [stored.index, when(entry.time), entry.actor_agency || "", t("action." + action),
        outcome, entry.event_id || "", entry.reason || ""];
      values.forEach((value) => tr.appendChild(element("td", value)));
      const cell = element("td");
      const button = element("button", t("audit.verify"), { type: "button", "data-testid": "verify" });
      button.addEventListener("click", () => verifyRow(stored, cell, button));
      cell.appendChild(button);
      tr.appendChild(cell);
      return tr;
    }

    async function load(start, append) {
      shownGateway = form.elements.gateway.value.trim();
      try {
        const answer = await getJson("/api/audit/entries?" + query(start));
        showProblem("");
        const made = answer.entries.map(row);
        if (append) rows.append(...made); else rows.replaceChildren(...made);
        next = answer.next_index;
        more.hidden = !answer.more;
        document.getElementById("audit-empty").hidden = rows.children.length > 0;
        document.getElementById("audit-position").textContent = `${next} / ${answer.log_size}`;
      } catch (error) {
        if (!append) rows.replaceChildren();
        more.hidden = true;
        showProblem(error.message);
      }
    }

    form.addEventListener("submit", (submitted) => {
      submitted.preventDefault();
      const gateway = form.elements.gateway.value.trim();
      window.localStorage.setItem(GATEWAY, gateway);
      box.set(gateway);
      bundleButton.hidden = !form.elements.incident.value.trim();
      load(0, false);
    });
    form.elements.incident.addEventListener("input", () => {
      bundleButton.hidden = !form.elements.incident.value.trim();
    });
    bundleButton.addEventListener("click", () =>
      downloadBundle(form.elements.incident.value.trim(), form.elements.gateway.value.trim()));
    more.addEventListener("click", () => load(next, true));
    form.elements.gateway.value = window.localStorage.getItem(GATEWAY) || "";
    knownLogs().then((gateways) => {
      if (!form.elements.gateway.value && gateways.length) {
        form.elements.gateway.value = gateways[0];
        box.set(gateways[0]);
      }
      box.show();
    });
  }

  // --- the checkpoints of every log -------------------------------------------------------

  function checkpointsPage() {
    const form = document.getElementById("checkpoint-form");
    const rows = document.getElementById("checkpoint-rows");
    const box = keyBox(window.localStorage.getItem(GATEWAY) || "");

    async function one(gateway) {
      const tr = element("tr", null, { "data-testid": "checkpoint-row", "data-gateway": gateway });
      tr.appendChild(element("td", gateway));
      const size = element("td"), root = element("td", null, { class: "hash" }), result = element("td");
      tr.append(size, root, result);
      try {
        const signed = await getJson("/api/audit/checkpoint?" + new URLSearchParams({ gateway }));
        size.textContent = signed.tree_size;
        root.textContent = window.DutyLinkVerify.hex(window.DutyLinkVerify.fromBase64("root", signed.root_hash));
        result.appendChild(verdict(await window.DutyLinkVerify.verifyCheckpoint(signed, keyOf(gateway))));
      } catch (error) {
        result.appendChild(verdict([{ id: "checkpoint", ok: false, reason: error.message }]));
      }
      return tr;
    }

    async function show() {
      const gateways = form.elements.gateways.value.split(",").map((id) => id.trim()).filter(Boolean);
      window.localStorage.setItem(GATEWAYS, gateways.join(","));
      if (gateways.length && !document.getElementById("key-gateway").value) box.set(gateways[0]);
      rows.replaceChildren(...await Promise.all(gateways.map(one)));
    }

    form.addEventListener("submit", (submitted) => { submitted.preventDefault(); show(); });
    document.getElementById("checkpoint-discover").addEventListener("click", async () => {
      const found = await knownLogs();
      if (found.length) form.elements.gateways.value = found.join(",");
      show();
    });
    document.addEventListener("dutylink:key", show);
    form.elements.gateways.value = window.localStorage.getItem(GATEWAYS) || "";
    knownLogs().then(() => box.show());
    if (form.elements.gateways.value) show();
  }

  // --- an incident's page: its evidence bundle --------------------------------------------

  function incidentBundle() {
    const button = document.getElementById("bundle");
    button.addEventListener("click", () =>
      downloadBundle(body.dataset.incidentId, window.localStorage.getItem(GATEWAY) || "", "bundle-problem"));
  }

  document.addEventListener("DOMContentLoaded", () => {
    apply(document);
    if (body.dataset.page === "audit") auditPage();
    if (body.dataset.page === "checkpoints") checkpointsPage();
    if (body.dataset.page === "incident") incidentBundle();
  });
})();
