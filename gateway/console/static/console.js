// The board and incident pages: they read the console's JSON API (never the gateway, never a
// token: the session cookie is HttpOnly) and draw every value with textContent, so nothing the
// gateway returns is ever interpreted as HTML.
"use strict";
(function () {
  const { t, apply } = window.DutyLinkI18n;
  const body = document.body;
  const { element, showProblem } = window.DutyLinkPage;
  const { when } = window.DutyLinkPage;
  const { getJson } = window.DutyLinkPage;

  // --- the board ----------------------------------------------------------------------------

  function boardPage() {
    const form = document.getElementById("filters");
    const rows = document.getElementById("rows");
    const live = document.getElementById("live");
    const incidents = new Map();
    let source = null;
    let generation = 0;

    function filters() {
      const query = new URLSearchParams(window.location.search);
      return {
        jurisdiction: query.get("jurisdiction") || "",
        plane: query.get("plane") || "ACTUAL",
        all: query.get("all") === "1",
      };
    }

    function apiQuery(chosen, withAll) {
      const query = new URLSearchParams({ jurisdiction: chosen.jurisdiction, plane: chosen.plane });
      if (withAll && chosen.all) query.set("all", "1");
      return query.toString();
    }

    function setLive(state) {
      live.dataset.state = state;
      live.textContent = t("live." + state);
    }

    function order(a, b) {
      const overdue = (b.overdue || 0) - (a.overdue || 0);
      if ((a.overdue || 0) > 0 !== (b.overdue || 0) > 0) return overdue;
      return String(b.updated_time || "").localeCompare(String(a.updated_time || ""));
    }

    function row(incident, plane) {
      const overdue = incident.overdue || 0;
      const tr = element("tr", null, { "data-testid": "incident-row", "data-incident-id": incident.incident_id });
      if (overdue > 0) tr.classList.add("overdue");
      if (incident.open === false || incident.open === undefined) tr.classList.add("finished");
      const link = element("a", incident.incident_id, {
        href: "/incident/" + encodeURIComponent(incident.incident_id) + "?plane=" + encodeURIComponent(plane),
        "data-testid": "incident-link",
      });
      const cells = [
        link, incident.title || "", incident.division_code || "",
        (incident.stage && incident.stage.state) || "", (incident.stage && incident.stage.lead) || "",
        (incident.agencies || []).join(", "), overdue, when(incident.updated_time),
      ];
      cells.forEach((value, index) => {
        const td = element("td");
        if (value instanceof Node) td.appendChild(value); else td.textContent = String(value);
        if (index === 6) { td.classList.add("overdue-count"); td.dataset.testid = "overdue-count"; }
        tr.appendChild(td);
      });
      return tr;
    }

    function render() {
      const chosen = filters();
      const shown = [...incidents.values()].filter((i) => chosen.all || i.open).sort(order);
      rows.replaceChildren(...shown.map((incident) => row(incident, chosen.plane)));
      document.getElementById("empty").hidden = shown.length > 0;
      document.dispatchEvent(new CustomEvent("dutylink:board", { detail: { incidents: shown, plane: chosen.plane } }));
    }

    async function load() {
      const mine = ++generation;
      try {
        const answer = await getJson("/api/board?" + apiQuery(filters(), true));
        if (mine !== generation) return;  // a newer filter's answer wins
        incidents.clear();
        for (const incident of answer.incidents || []) incidents.set(incident.incident_id, incident);
        showProblem("");
        render();
      } catch (error) {
        showProblem(error.message);
      }
    }

    function connect() {
      if (source) source.close();
      setLive("connecting");
      source = new EventSource("/api/events?" + apiQuery(filters(), false));
      // On every (re)connect, read the whole board again: nothing missed while away.
      source.addEventListener("ready", () => { setLive("live"); load(); });
      source.addEventListener("message", (message) => {
        const change = JSON.parse(message.data).incident;
        if (change) { incidents.set(change.incident_id, change); render(); }
      });
      source.addEventListener("failure", (message) => {
        showProblem(JSON.parse(message.data).error);
      });
      source.onerror = () => {
        setLive("reconnecting");
        if (source.readyState === EventSource.CLOSED) {
          // Refused outright (a 401 or 400): find out why, then try again later.
          load().finally(() => window.setTimeout(connect, 5000));
        }
      };
    }

    function fillForm() {
      const chosen = filters();
      form.elements.jurisdiction.value = chosen.jurisdiction;
      form.elements.plane.value = chosen.plane;
      form.elements.all.checked = chosen.all;
    }

    form.addEventListener("submit", (submitted) => {
      submitted.preventDefault();
      const query = new URLSearchParams({
        jurisdiction: form.elements.jurisdiction.value.trim(),
        plane: form.elements.plane.value,
      });
      if (form.elements.all.checked) query.set("all", "1");
      window.history.replaceState(null, "", "/?" + query.toString());
      incidents.clear();
      render();
      connect();
    });
    form.elements.all.addEventListener("change", () => form.requestSubmit());
    form.elements.plane.addEventListener("change", () => form.requestSubmit());
    document.addEventListener("dutylink:language", () => { setLive(live.dataset.state); render(); });
    fillForm();
    render();
    connect();
  }

  // --- one incident ---------------------------------------------------------------------------

  function incidentPage() {
    const incidentId = body.dataset.incidentId;
    const plane = new URLSearchParams(window.location.search).get("plane") || "ACTUAL";
    let shown = null;

    function summary(incident) {
      const list = document.getElementById("summary");
      const stage = incident.stage || {};
      const pairs = [
        ["col.stage", stage.state || ""], ["summary.phase", (incident.phase && incident.phase.state) || ""],
        ["col.lead", stage.lead || ""], ["col.agencies", (incident.agencies || []).join(", ")],
        ["col.division", incident.division_code || ""],
        ["summary.open", t(incident.open ? "summary.opened" : "summary.closed")],
        ["col.overdue", incident.overdue || 0], ["col.updated", when(incident.updated_time)],
      ];
      if (incident.dropped_events) pairs.push(["summary.dropped", incident.dropped_events]);
      list.replaceChildren();
      for (const [key, value] of pairs) {
        list.appendChild(element("dt", t(key)));
        list.appendChild(element("dd", value, { "data-testid": "summary-" + key.split(".")[1] }));
      }
    }

    function lines(incident) {
      const rows = (incident.lines || []).map((line) => {
        const tr = element("tr", null, { "data-testid": "line-row" });
        if (line.overdue) tr.classList.add("overdue");
        const values = [line.lifecycle, line.key, line.state, line.lead || "",
          (line.assigned || []).join(", "), when(line.deadline), line.overdue ? t("line.overdue") : ""];
        values.forEach((value, index) => {
          const td = element("td", value);
          if (index === 6) td.classList.add("overdue-mark");
          tr.appendChild(td);
        });
        return tr;
      });
      if (rows.length === 0) {
        const tr = element("tr");
        tr.appendChild(element("td", t("lines.none"), { colspan: "7" }));
        rows.push(tr);
      }
      document.getElementById("lines").replaceChildren(...rows);
    }

    // Who received the event and what the policy withheld from whom, by which rule: the
    // gateway sends these only to the event's sender and the command centre.
    function recipientList(recipients) {
      const box = element("div", null, { class: "entry-recipients", "data-testid": "entry-recipients" });
      box.appendChild(element("span", t("recipients.heading"), { class: "heading" }));
      const list = element("ul");
      for (const recipient of recipients) {
        const outcome = String(recipient.outcome || "").replace("BOARD_RECIPIENT_OUTCOME_", "") || "UNSPECIFIED";
        const li = element("li", null, {
          "data-testid": "entry-recipient", "data-agency": recipient.agency || "", "data-outcome": outcome,
        });
        li.classList.add("outcome-" + outcome.toLowerCase());
        li.appendChild(element("span", recipient.agency || "", { class: "agency" }));
        li.appendChild(element("span", t("recipient.outcome." + outcome), { "data-testid": "recipient-outcome" }));
        const rules = (recipient.rule_ids || []).join(", ");
        li.appendChild(element("span", rules ? t("recipient.rule") + " " + rules : recipient.reason || "",
          { class: "rule", "data-testid": "recipient-rule" }));
        if ((recipient.redacted_fields || []).length) {
          li.appendChild(element("span", t("recipient.redacted") + " " + recipient.redacted_fields.join(", "),
            { class: "redacted", "data-testid": "recipient-redacted" }));
        }
        const tracked = recipient.tracked;
        if (tracked) {
          const stamp = tracked.answered_at || tracked.delivered_at;
          li.appendChild(element("span", t("ack.status." + status(tracked)) + (stamp ? " " + when(stamp) : ""),
            { class: "tracked", "data-testid": "recipient-tracked" }));
        }
        if (recipient.policy_not_archived) li.appendChild(element("span", t("recipient.policy_not_archived"), { class: "note" }));
        list.appendChild(li);
      }
      box.appendChild(list);
      return box;
    }

    function timeline(incident) {
      const list = document.getElementById("timeline");
      // A refresh keeps the entries the officer opened open.
      const opened = new Set([...list.querySelectorAll("li[data-event-id]")]
        .filter((li) => li.querySelector("details[open]")).map((li) => li.dataset.eventId));
      const items = (incident.timeline || []).map((entry) => {
        const event = entry.event || {};
        const li = element("li", null, { "data-testid": "timeline-entry", "data-event-id": event.id || "" });
        li.appendChild(element("span", when(entry.received_time), { class: "when" }));
        li.appendChild(element("span", event.source || "", { class: "source", "data-testid": "entry-source" }));
        li.appendChild(element("span", event.type || "", { class: "type", "data-testid": "entry-type" }));
        if ((entry.recipients || []).length) li.appendChild(recipientList(entry.recipients));
        const details = element("details");
        if (event.id && opened.has(event.id)) details.open = true;
        details.appendChild(element("summary", t("timeline.json")));
        details.appendChild(element("pre", JSON.stringify(event, null, 2), { "data-testid": "event-json" }));
        li.appendChild(details);
        return li;
      });
      list.replaceChildren(...items);
    }

    function status(recipient) {
      return String(recipient.status || "RECIPIENT_STATUS_UNSPECIFIED").replace("RECIPIENT_STATUS_", "");
    }

    function recipientRow(recipient) {
      const state = status(recipient);
      const tr = element("tr", null, { "data-testid": "ack-recipient", "data-agency": recipient.agency || "" });
      tr.classList.add("ack-" + state.toLowerCase());
      const stamp = recipient.answered_at || recipient.delivered_at;
      const cells = [
        [recipient.agency || "", "recipient-agency"],
        [t("ack.status." + state), "recipient-status"],
        [when(stamp), "recipient-time"],
        [recipient.answered_by || "", "recipient-by"],
        [recipient.reason || "", "recipient-reason"],
      ];
      for (const [value, testid] of cells) tr.appendChild(element("td", value, { "data-testid": testid }));
      tr.children[1].dataset.status = state;
      return tr;
    }

    function deadlineItem(deadline) {
      const li = element("li", null, { "data-testid": "ack-deadline", "data-deadline-id": deadline.id || "" });
      const fired = deadline.fired_levels || 0;
      const expect = String(deadline.expect || "").replace("DEADLINE_EXPECTATION_", "");
      li.appendChild(element("span", deadline.id || "", { class: "what" }));
      li.appendChild(element("span", t("deadline.expect." + expect) + " " + (deadline.states || []).join(", ")));
      li.appendChild(element("span", t("deadline.due") + " " + when(deadline.due), { "data-testid": "deadline-due" }));
      li.appendChild(element("span", t("deadline.escalated") + " " + fired + "/" + (deadline.levels || 0),
        { "data-testid": "deadline-escalated" }));
      const met = deadline.met_at ? t("deadline.met") + " " + when(deadline.met_at) : t("deadline.open");
      li.appendChild(element("span", met, { "data-testid": "deadline-met" }));
      if (deadline.met_at) li.classList.add("met");
      else if (fired > 0) li.classList.add("escalated");
      return li;
    }

    function acknowledgementSection(message) {
      const section = element("section", null, {
        class: "ack-message", "data-testid": "ack-message",
        "data-event-id": message.event_id || "", "data-event-type": message.event_type || "",
      });
      const head = element("h3");
      head.appendChild(element("span", message.event_type || "", { class: "type", "data-testid": "ack-type" }));
      head.appendChild(element("span", t("ack.from") + " " + (message.sender || ""),
        { class: "source", "data-testid": "ack-sender" }));
      head.appendChild(element("span", when(message.received_time), { class: "when" }));
      section.appendChild(head);
      section.appendChild(element("p", (message.summary && message.summary.text) || "",
        { class: "ack-summary", "data-testid": "ack-summary" }));
      const table = element("table", null, { class: "recipients", "data-testid": "ack-recipients" });
      const header = element("tr");
      for (const key of ["ack.agency", "ack.status", "ack.time", "ack.by", "ack.reason"]) {
        header.appendChild(element("th", t(key)));
      }
      table.appendChild(element("thead")).appendChild(header);
      table.appendChild(element("tbody")).replaceChildren(...(message.recipients || []).map(recipientRow));
      section.appendChild(table);
      const deadlines = message.deadlines || [];
      if (deadlines.length) {
        section.appendChild(element("ul", null, { class: "deadlines", "data-testid": "ack-deadlines" }))
          .replaceChildren(...deadlines.map(deadlineItem));
      }
      return section;
    }

    function acknowledgements(incident) {
      const messages = incident.acknowledgements || [];
      document.getElementById("acks").replaceChildren(...messages.map(acknowledgementSection));
      document.getElementById("acks-empty").hidden = messages.length > 0;
    }

    function render() {
      if (!shown) return;
      document.getElementById("incident-title").textContent = shown.title || "";
      summary(shown);
      lines(shown);
      acknowledgements(shown);
      timeline(shown);
      document.dispatchEvent(new CustomEvent("dutylink:incident", { detail: { incident: shown, plane } }));
    }

    // Live: the board's event stream announces every change of this incident (an
    // acknowledgement names its incidents, so it is one); the page then reads the incident
    // again, and once more a moment later, as the gateway's tracker takes in an answer
    // moments after the board does. Deliveries change no board: a slow read every
    // REFRESH_MS while the page is visible catches those.
    const live = document.getElementById("live");
    const url = "/api/incident/" + encodeURIComponent(incidentId) + "?plane=" + encodeURIComponent(plane);
    const LATER_MS = 2000;
    const REFRESH_MS = 15000;
    let generation = 0;
    let later = null;
    let source = null;

    async function load() {
      const mine = ++generation;
      try {
        const incident = await getJson(url);
        if (mine !== generation) return;  // a newer read's answer wins
        shown = incident;
        showProblem("");
        render();
      } catch (error) {
        if (mine === generation) showProblem(error.message);
      }
    }

    function changed() {
      load();
      if (later) window.clearTimeout(later);
      later = window.setTimeout(() => { later = null; load(); }, LATER_MS);
    }

    function setLive(state) {
      live.dataset.state = state;
      live.textContent = t("live." + state);
    }

    function connect() {
      if (source) source.close();
      setLive("connecting");
      source = new EventSource("/api/events?" + new URLSearchParams({ plane }).toString());
      source.addEventListener("ready", () => { setLive("live"); load(); });
      source.addEventListener("message", (message) => {
        const change = JSON.parse(message.data).incident;
        if (change && change.incident_id === incidentId) changed();
      });
      source.addEventListener("failure", (message) => showProblem(JSON.parse(message.data).error));
      source.onerror = () => {
        setLive("reconnecting");
        if (source.readyState === EventSource.CLOSED) {
          load().finally(() => window.setTimeout(connect, 5000));
        }
      };
    }

    window.setInterval(() => { if (document.visibilityState === "visible") load(); }, REFRESH_MS);
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") load(); });
    document.addEventListener("dutylink:language", () => { setLive(live.dataset.state); render(); });
    load();
    connect();
  }

  document.addEventListener("DOMContentLoaded", () => {
    apply(document);
    if (body.dataset.page === "board") boardPage();
    if (body.dataset.page === "incident") incidentPage();
  });
})();
