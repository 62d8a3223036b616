"""The resource ledger page (/ledger): an agency's item lines with their total, available,
reserved, committed, deployed and returning quantities (static/ledger.js fills it from
/api/ledger). An officer sees its own agency's ledger; the command centre also gets a chooser of
agencies (the ones the console was told of, else a field for an agency id, checked again by the
API and by the gateway). The shell carries no data, only the agencies to offer, escaped."""

from __future__ import annotations

import html

from aiohttp import web

from gateway.console.pages import html_response, page
from gateway.console.state import SETTINGS

SCRIPTS = ("ledger.js",)

CHOOSE_FROM_LIST = """<select name="agency" id="ledger-agency" data-testid="ledger-agency">
<option value="" data-i18n="ledger.own">本机构</option>
{options}</select>"""
CHOOSE_BY_ID = """<input name="agency" id="ledger-agency" maxlength="32"
 pattern="[a-z][a-z0-9\\-]{1,31}" data-testid="ledger-agency">"""

LEDGER_BODY = """<h1><span data-i18n="ledger.heading">资源台账</span>
<span id="ledger-owner" data-testid="ledger-owner"></span></h1>
<form class="filters" id="ledger-filters" data-testid="ledger-filters">
<label id="ledger-agency-field" hidden><span data-i18n="ledger.agency">机构</span>
{chooser}</label>
<label><span data-i18n="filter.plane">平面</span>
<select name="plane" id="plane" data-testid="ledger-plane">
<option value="ACTUAL" data-i18n="plane.ACTUAL">实战</option>
<option value="EXERCISE" data-i18n="plane.EXERCISE">演练</option>
<option value="TEST" data-i18n="plane.TEST">测试</option></select></label>
<button type="submit" data-i18n="filter.apply">应用</button>
<span class="live" id="live" data-testid="live-status" data-state="connecting"></span>
</form>
<p class="error" id="problem" data-testid="problem" role="alert" hidden></p>
<table class="ledger" data-testid="ledger-table"><thead><tr>
<th data-i18n="ledger.item">物资/装备</th><th data-i18n="ledger.unit">单位</th>
<th data-i18n="ledger.total">总量</th><th data-i18n="ledger.available">可用</th>
<th data-i18n="ledger.reserved">预留</th><th data-i18n="ledger.committed">已承诺</th>
<th data-i18n="ledger.deployed">已部署</th><th data-i18n="ledger.returning">返还中</th>
<th data-i18n="ledger.threshold">阈值</th><th data-i18n="ledger.mark">提示</th>
<th data-i18n="ledger.lines">资源单</th>
</tr></thead><tbody id="ledger-rows" data-testid="ledger-rows"></tbody></table>
<p id="ledger-empty" data-testid="ledger-empty" data-i18n="ledger.empty" hidden>暂无台账条目</p>
<p id="ledger-more" data-testid="ledger-more" data-i18n="ledger.more" hidden>条目过多,未全部显示</p>
"""


def chooser(agencies: tuple[str, ...]) -> str:
    """A list of the known agencies, or (none known) a field for an agency's id."""
    if not agencies:
        return CHOOSE_BY_ID
    options = "\n".join(
        f'<option value="{html.escape(agency)}">{html.escape(agency)}</option>'
        for agency in sorted(agencies)
    )
    return CHOOSE_FROM_LIST.format(options=options + "\n")


async def ledger_page(request: web.Request) -> web.Response:
    body = LEDGER_BODY.format(chooser=chooser(request.app[SETTINGS].agencies))
    return html_response(page(request, "ledger", body, logout=True, scripts=SCRIPTS))
