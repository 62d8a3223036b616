// The console's labels in Chinese (the default) and English, both dictionaries in this one file;
// elements carry data-i18n="key" and are relabelled when the language switch is pressed.
"use strict";
(function () {
  const DICTIONARIES = {
    zh: {
      "app.title": "值班看板",
      "board.heading": "值班看板",
      "board.empty": "暂无事件",
      "login.heading": "登录",
      "login.token": "机构令牌",
      "login.submit": "登录",
      "login.note": "使用本机构的令牌登录;令牌仅保存在服务器端。",
      "login.refused": "令牌无效或无权查看看板",
      "login.missing": "请输入令牌",
      "logout": "退出",
      "filter.jurisdiction": "辖区前缀",
      "filter.plane": "平面",
      "filter.closed": "含已关闭",
      "filter.apply": "应用",
      "plane.ACTUAL": "实战",
      "plane.EXERCISE": "演练",
      "plane.TEST": "测试",
      "col.incident": "事件",
      "col.title": "标题",
      "col.division": "区划",
      "col.stage": "阶段",
      "col.lead": "牵头单位",
      "col.agencies": "参与单位",
      "col.overdue": "逾期",
      "col.updated": "更新时间",
      "live.connecting": "连接中…",
      "live.live": "实时",
      "live.reconnecting": "重新连接中…",
      "back": "返回看板",
      "summary.phase": "应急阶段",
      "summary.open": "状态",
      "summary.opened": "处置中",
      "summary.closed": "已结束",
      "summary.dropped": "已省略的早期事件",
      "lines.heading": "预警、任务与资源",
      "lines.none": "无",
      "line.kind": "类别",
      "line.key": "编号",
      "line.state": "状态",
      "line.assigned": "指派",
      "line.deadline": "期限",
      "line.overdue": "逾期",
      "timeline.heading": "时间线",
      "timeline.json": "事件原文 (JSON)",
      "error.gone": "会话已结束,请重新登录",
    },
    en: {
      "app.title": "Duty board",
      "board.heading": "Duty board",
      "board.empty": "No incidents",
      "login.heading": "Log in",
      "login.token": "Agency token",
      "login.submit": "Log in",
      "login.note": "Log in with your agency's token; it stays on the server.",
      "login.refused": "Token refused by the gateway",
      "login.missing": "Enter a token",
      "logout": "Log out",
      "filter.jurisdiction": "Jurisdiction prefix",
      "filter.plane": "Plane",
      "filter.closed": "Closed too",
      "filter.apply": "Apply",
      "plane.ACTUAL": "Actual",
      "plane.EXERCISE": "Exercise",
      "plane.TEST": "Test",
      "col.incident": "Incident",
      "col.title": "Title",
      "col.division": "Division",
      "col.stage": "Stage",
      "col.lead": "Lead agency",
      "col.agencies": "Agencies",
      "col.overdue": "Overdue",
      "col.updated": "Updated",
      "live.connecting": "Connecting…",
      "live.live": "Live",
      "live.reconnecting": "Reconnecting…",
      "back": "Back to the board",
      "summary.phase": "Emergency phase",
      "summary.open": "Status",
      "summary.opened": "Open",
      "summary.closed": "Finished",
      "summary.dropped": "Earlier events left out",
      "lines.heading": "Warnings, tasks and resources",
      "lines.none": "None",
      "line.kind": "Kind",
      "line.key": "Key",
      "line.state": "State",
      "line.assigned": "Assigned",
      "line.deadline": "Deadline",
      "line.overdue": "Overdue",
      "timeline.heading": "Timeline",
      "timeline.json": "The event as received (JSON)",
      "error.gone": "Session ended: log in again",
    },
  };
  const STORED = "dutylink.language";

  function language() {
    const chosen = window.localStorage.getItem(STORED);
    return chosen === "en" ? "en" : "zh";
  }

  function t(key) {
    const own = DICTIONARIES[language()][key];
    return own === undefined ? key : own;
  }

  function apply(root) {
    for (const element of root.querySelectorAll("[data-i18n]")) {
      element.textContent = t(element.dataset.i18n);
    }
    document.documentElement.lang = language();
    const button = document.getElementById("language");
    if (button) button.textContent = language() === "zh" ? "EN" : "中文";
  }

  function toggle() {
    window.localStorage.setItem(STORED, language() === "zh" ? "en" : "zh");
    apply(document);
    document.dispatchEvent(new CustomEvent("dutylink:language"));
  }

  window.DutyLinkI18n = { t, apply, language, DICTIONARIES };
  document.addEventListener("DOMContentLoaded", () => {
    apply(document);
    const button = document.getElementById("language");
    if (button) button.addEventListener("click", toggle);
  });
})();
