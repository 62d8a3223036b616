// What every page's script shares: making elements (text only, never HTML), times in the
// city's zone, the page's problem line, and reading the console's JSON API (a 401 sends the
// officer to the login page).
"use strict";
window.DutyLinkPage = (function () {
  const { t } = window.DutyLinkI18n;
  const zone = document.body.dataset.zone || "Asia/Shanghai";

  function element(tag, text, attributes) {
    const made = document.createElement(tag);
    if (text !== undefined && text !== null) made.textContent = String(text);
    for (const [name, value] of Object.entries(attributes || {})) made.setAttribute(name, value);
    return made;
  }

  // A time in the city's zone: to the second with the year, or (`short`) month, day and minute.
  function when(stamp, short) {
    if (!stamp) return "";
    const locale = window.DutyLinkI18n.language() === "zh" ? "zh-CN" : "en-GB";
    const parts = short
      ? { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }
      : { year: "numeric", month: "2-digit", day: "2-digit",
          hour: "2-digit", minute: "2-digit", second: "2-digit" };
    return new Intl.DateTimeFormat(locale, { timeZone: zone, hour12: false, ...parts })
      .format(new Date(stamp));
  }

  function showProblem(message, id) {
    const problem = document.getElementById(id || "problem");
    if (!problem) return;
    problem.textContent = message;
    problem.hidden = !message;
  }

  // `forbidden`: what a 403 is prefixed with (e.g. "auditors only").
  async function getJson(url, forbidden) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      window.location.assign("/login");
      throw new Error(t("error.gone"));
    }
    const answer = await response.json();
    if (!response.ok) {
      const prefix = response.status === 403 && forbidden ? forbidden + " " : "";
      throw new Error(prefix + (answer.error || String(response.status)));
    }
    return answer;
  }

  return { zone, element, when, showProblem, getJson };
})();
