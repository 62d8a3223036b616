// The resource ledger page (资源台账): reads /api/ledger (never the gateway, never a token) and
// draws every value with textContent. It reads the ledger again on every change the board's
// event stream announces (a reservation or commitment naming an incident is one) and every
// REFRESH_MS while the page is visible, since declarations and lines without an incident change
// no board.
"use strict";
(function () {
  const { t, apply } = window.DutyLinkI18n;
  const body = document.body;
  const { element, showProblem } = window.DutyLinkPage;
  const when = (stamp) => window.DutyLinkPage.when(stamp, true);
  const { getJson } = window.DutyLinkPage;
  const REFRESH_MS = 15000;
  const SETTLE_MS = 300;  // a burst of changes is read once

  function chosen() {
    const query = new URLSearchParams(window.location.search);
    return { agency: query.get("agency") || "", plane: query.get("plane") || "ACTUAL" };
  }

  function stage(holding) {
    return t("ledger.stage." + String(holding.stage || "").replace("LEDGER_STAGE_", ""));
  }

  function holdingText(holding) {
    let text = (holding.originating_message_id || "") + "/" + (holding.resource_info_element_id || "")
      + " " + stage(holding) + " " + (holding.quantity || 0);
    if (holding.expires) text += " " + t("ledger.until") + " " + when(holding.expires);
    return text;
  }

  function row(item) {
    const tr = element("tr", null, { "data-testid": "ledger-row", "data-item-id": item.item_id || "" });
    if (item.below_threshold) tr.classList.add("below");
    if (item.out_of_service) tr.classList.add("out");
    const marks = [];
    if (item.below_threshold) marks.push(t("ledger.below"));
    if (item.out_of_service) marks.push(t("ledger.out"));
    const cells = [
      [item.item_id || "", "ledger-item"], [item.unit || "", "ledger-unit"],
      [item.total || 0, "ledger-total"], [item.available || 0, "ledger-available"],
      [item.reserved || 0, "ledger-reserved"], [item.committed || 0, "ledger-committed"],
      [item.deployed || 0, "ledger-deployed"], [item.returning || 0, "ledger-returning"],
      [item.threshold || 0, "ledger-threshold"], [marks.join(" "), "ledger-mark"],
    ];
    for (const [value, testid] of cells) tr.appendChild(element("td", value, { "data-testid": testid }));
    tr.children[0].title = item.type_info || "";
    tr.children[9].classList.add("mark");
    const lines = element("ul", null, { class: "holdings", "data-testid": "ledger-holdings" });
    for (const holding of item.holdings || []) lines.appendChild(element("li", holdingText(holding)));
    tr.appendChild(element("td")).appendChild(lines);
    return tr;
  }

  function ledgerPage() {
    const form = document.getElementById("ledger-filters");
    const live = document.getElementById("live");
    let shown = null;
    let generation = 0;
    let settling = null;
    let source = null;

    function render() {
      if (!shown) return;
      document.getElementById("ledger-owner").textContent = shown.agency || "";
      // Only the command centre may ask for another agency's ledger: only it gets the chooser.
      document.getElementById("ledger-agency-field").hidden = !shown.every_agency;
      const items = shown.items || [];
      document.getElementById("ledger-rows").replaceChildren(...items.map(row));
      document.getElementById("ledger-empty").hidden = items.length > 0;
      document.getElementById("ledger-more").hidden = !shown.truncated;
    }

    async function load() {
      const mine = ++generation;
      try {
        const answer = await getJson("/api/ledger?" + new URLSearchParams(chosen()).toString());
        if (mine !== generation) return;  // a newer read's answer wins
        shown = answer;
        showProblem("");
        render();
      } catch (error) {
        if (mine === generation) showProblem(error.message);
      }
    }

    function changed() {
      if (settling) return;
      settling = window.setTimeout(() => { settling = null; load(); }, SETTLE_MS);
    }

    function setLive(state) {
      live.dataset.state = state;
      live.textContent = t("live." + state);
    }

    function connect() {
      if (source) source.close();
      setLive("connecting");
      source = new EventSource("/api/events?" + new URLSearchParams({ plane: chosen().plane }).toString());
      source.addEventListener("ready", () => { setLive("live"); load(); });
      source.addEventListener("message", changed);
      source.addEventListener("failure", (message) => showProblem(JSON.parse(message.data).error));
      source.onerror = () => {
        setLive("reconnecting");
        if (source.readyState === EventSource.CLOSED) {
          load().finally(() => window.setTimeout(connect, 5000));
        }
      };
    }

    function fillForm() {
      const now = chosen();
      form.elements.agency.value = now.agency;
      form.elements.plane.value = now.plane;
    }

    form.addEventListener("submit", (submitted) => {
      submitted.preventDefault();
      if (!form.reportValidity()) return;
      const query = new URLSearchParams({
        agency: form.elements.agency.value.trim(), plane: form.elements.plane.value,
      });
      window.history.replaceState(null, "", "/ledger?" + query.toString());
      shown = null;
      connect();
    });
    form.elements.plane.addEventListener("change", () => form.requestSubmit());
    if (form.elements.agency.tagName === "SELECT") {
      form.elements.agency.addEventListener("change", () => form.requestSubmit());
    }
    window.setInterval(() => { if (document.visibilityState === "visible") load(); }, REFRESH_MS);
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") load(); });
    document.addEventListener("dutylink:language", () => { setLive(live.dataset.state); render(); });
    fillForm();
    load();
    connect();
  }

  document.addEventListener("DOMContentLoaded", () => {
    apply(document);
    if (body.dataset.page === "ledger") ledgerPage();
  });
})();
