"""The auditor pages' HTML shells: the audit log search (/audit) and the checkpoints of every
log (/checkpoints). Any logged-in agency may open them; the gateway answers only auditors, and
the page shows its refusal. The shells carry no data: static/audit.js fills them from the API and
static/verify.js (with static/sm.js for a log of the national profile) checks what it gets, in
the browser."""

from __future__ import annotations

from aiohttp import web

from gateway.console.audit_queries import ACTIONS
from gateway.console.pages import html_response, page

SCRIPTS = ("sm.js", "verify.js", "audit.js")

# The verifier key of one log, held in the browser (localStorage, per gateway id).
KEY_BOX = """<details class="keybox" id="keybox" data-testid="key-box" open>
<summary data-i18n="key.heading">日志验证公钥</summary>
<p class="note" data-i18n="key.note">粘贴网关副本的验证公钥(名称+密钥ID+base64),按网关保存在本浏览器中;验证只使用此处的公钥。</p>
<label><span data-i18n="audit.gateway">网关副本</span>
<input id="key-gateway" maxlength="64" data-testid="key-gateway" list="known-gateways"></label>
<textarea id="key-input" rows="2" cols="70" maxlength="300" spellcheck="false"
 data-testid="key-input"></textarea>
<button type="button" id="key-save" data-testid="key-save" data-i18n="key.save">保存公钥</button>
<button type="button" id="key-default" data-testid="key-default" data-i18n="key.default" hidden>使用控制台配置的公钥</button>
<span id="key-status" data-testid="key-status"></span>
</details>
<datalist id="known-gateways"></datalist>
"""

AUDIT_BODY = """<h1 data-i18n="audit.heading">审计</h1>
<form class="filters" id="audit-filters" data-testid="audit-filters">
<label><span data-i18n="audit.gateway">网关副本</span>
<input name="gateway" maxlength="64" list="known-gateways" data-testid="audit-gateway"></label>
<label><span data-i18n="audit.agency">机构</span>
<input name="agency" maxlength="64" data-testid="audit-agency"></label>
<label><span data-i18n="audit.event">消息编号</span>
<input name="event" maxlength="128" data-testid="audit-event"></label>
<label><span data-i18n="col.incident">事件</span>
<input name="incident" maxlength="64" data-testid="audit-incident"></label>
<label><span data-i18n="audit.action">操作</span>
<select name="action" data-testid="audit-action"><option value="" data-i18n="audit.any">全部</option>
{actions}</select></label>
<label><span data-i18n="audit.from">起</span>
<input type="datetime-local" name="from" step="1" data-testid="audit-from"></label>
<label><span data-i18n="audit.to">止</span>
<input type="datetime-local" name="to" step="1" data-testid="audit-to"></label>
<button type="submit" data-i18n="audit.search" data-testid="audit-search">查询</button>
<button type="button" id="audit-bundle" data-testid="audit-bundle" data-i18n="bundle.download" hidden>下载证据包</button>
</form>
<p class="error" id="problem" data-testid="problem" role="alert" hidden></p>
{key_box}
<table class="audit" data-testid="audit-table"><thead><tr>
<th>#</th><th data-i18n="audit.time">时间</th><th data-i18n="audit.actor">操作方</th>
<th data-i18n="audit.action">操作</th><th data-i18n="audit.outcome">结果</th>
<th data-i18n="audit.event">消息编号</th><th data-i18n="audit.reason">原因</th><th></th>
</tr></thead><tbody id="audit-rows" data-testid="audit-rows"></tbody></table>
<p id="audit-empty" data-testid="audit-empty" data-i18n="audit.empty" hidden>无匹配条目</p>
<p><button type="button" id="audit-more" data-testid="audit-more" data-i18n="audit.more" hidden>下一页</button>
<span id="audit-position" data-testid="audit-position"></span></p>
"""

CHECKPOINTS_BODY = """<h1 data-i18n="checkpoints.heading">检查点</h1>
<form class="filters" id="checkpoint-form" data-testid="checkpoint-form">
<label><span data-i18n="checkpoints.gateways">网关副本(逗号分隔)</span>
<input name="gateways" size="40" maxlength="1000" data-testid="checkpoint-gateways"></label>
<button type="submit" data-i18n="checkpoints.show" data-testid="checkpoint-show">查看</button>
<button type="button" id="checkpoint-discover" data-testid="checkpoint-discover"
 data-i18n="checkpoints.discover">查找全部日志</button>
</form>
<p class="error" id="problem" data-testid="problem" role="alert" hidden></p>
{key_box}
<table class="audit" data-testid="checkpoint-table"><thead><tr>
<th data-i18n="audit.gateway">网关副本</th><th data-i18n="checkpoints.size">条目数</th>
<th data-i18n="checkpoints.root">根哈希</th><th data-i18n="checkpoints.result">验证</th>
</tr></thead><tbody id="checkpoint-rows" data-testid="checkpoint-rows"></tbody></table>
"""


def _options() -> str:
    return "\n".join(
        f'<option value="{name}" data-i18n="action.{name}">{name}</option>' for name in ACTIONS
    )


async def audit_page(request: web.Request) -> web.Response:
    body = AUDIT_BODY.format(actions=_options(), key_box=KEY_BOX)
    return html_response(page(request, "audit", body, logout=True, scripts=SCRIPTS))


async def checkpoints_page(request: web.Request) -> web.Response:
    body = CHECKPOINTS_BODY.format(key_box=KEY_BOX)
    return html_response(page(request, "checkpoints", body, logout=True, scripts=SCRIPTS))
