"""The console's pages: the login form (checked against the gateway itself), logout, and the
HTML shells of the board and of one incident, which the script in static/ fills from the API.

The shells carry no data, only the zone and the incident's id in data- attributes (the content
security policy allows no inline script), every value escaped.
"""

from __future__ import annotations

import html

import grpc
from aiohttp import web

from gateway.console.queries import BadQuery, incident_id_of
from gateway.console.state import COOKIE, OFFICER, SESSIONS, SETTINGS

MAX_TOKEN_CHARS = 512
# The gateway's answers to a token it does not know or will not let read the board.
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

HEAD = """<!doctype html>
<html lang="zh"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DutyLink</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/i18n.js" defer></script>
<script src="/static/page.js" defer></script>
{scripts}</head>
<body data-page="{page}" data-zone="{zone}"{extra}>
<header class="bar"><a href="/" class="brand" data-i18n="app.title">值班看板</a>
{nav}<button type="button" id="language" data-testid="language-switch">EN</button>
{logout}</header>
<main>
"""
TAIL = "</main></body></html>\n"
NAV = """<nav class="nav"><a href="/ledger" data-testid="nav-ledger" data-i18n="nav.ledger">资源台账</a>
<a href="/audit" data-testid="nav-audit" data-i18n="nav.audit">审计</a>
<a href="/checkpoints" data-testid="nav-checkpoints" data-i18n="nav.checkpoints">检查点</a></nav>
"""
LOGOUT = """<form method="post" action="/logout" class="logout">
<button type="submit" data-testid="logout" data-i18n="logout">退出</button></form>"""
# Logged in by certificate: nothing to log out of (the browser holds the certificate).
OFFICER_BAR = '<span class="officer" data-testid="officer">{agency}</span>'
REFUSED_BODY = """<h1 data-i18n="login.refused_heading">无法登录</h1>
<p class="error" role="alert" data-testid="login-error">{reason}</p>
<p class="note" data-i18n="login.certificate_note">请使用本机构由交换平台签发的客户端证书访问。</p>
"""

LOGIN_BODY = """<h1 data-i18n="login.heading">登录</h1>
<form method="post" action="/login" class="login" data-testid="login-form">
<label for="token" data-i18n="login.token">机构令牌</label>
<input type="password" id="token" name="token" autocomplete="off" required
 maxlength="{max_token}" data-testid="login-token">
<button type="submit" data-i18n="login.submit" data-testid="login-submit">登录</button>
</form>
{message}
<p class="note" data-i18n="login.note">使用本机构的令牌登录;令牌仅保存在服务器端。</p>
"""
LOGIN_MESSAGE = (
    '<p class="error" role="alert" data-testid="login-error" data-i18n="{key}">{text}</p>'
)

# The map (static/map.js draws it): the board's incidents, or the incident and its warnings.
MAP_PANEL = """<section class="map-panel" data-testid="map-panel">
<h2><span data-i18n="map.heading">地图</span>
<button type="button" id="map-toggle" class="map-toggle" data-testid="map-toggle"></button></h2>
<div id="map" class="map" data-testid="map"></div></section>
"""

BOARD_BODY = """<h1 data-i18n="board.heading">值班看板</h1>
<form class="filters" id="filters" data-testid="board-filters">
<label><span data-i18n="filter.jurisdiction">辖区前缀</span>
<input name="jurisdiction" id="jurisdiction" maxlength="6" pattern="([0-9]{{2}}){{0,3}}"
 data-testid="filter-jurisdiction"></label>
<label><span data-i18n="filter.plane">平面</span>
<select name="plane" id="plane" data-testid="filter-plane">
<option value="ACTUAL" data-i18n="plane.ACTUAL">实战</option>
<option value="EXERCISE" data-i18n="plane.EXERCISE">演练</option>
<option value="TEST" data-i18n="plane.TEST">测试</option></select></label>
<label><input type="checkbox" name="all" id="all" data-testid="filter-all">
<span data-i18n="filter.closed">含已关闭</span></label>
<button type="submit" data-i18n="filter.apply">应用</button>
<span class="live" id="live" data-testid="live-status" data-state="connecting"></span>
</form>
<p class="error" id="problem" data-testid="problem" hidden></p>
{map}<table class="board" data-testid="board-table"><thead><tr>
<th data-i18n="col.incident">事件</th><th data-i18n="col.title">标题</th>
<th data-i18n="col.division">区划</th><th data-i18n="col.stage">阶段</th>
<th data-i18n="col.lead">牵头单位</th><th data-i18n="col.agencies">参与单位</th>
<th data-i18n="col.overdue">逾期</th><th data-i18n="col.updated">更新时间</th>
</tr></thead><tbody id="rows" data-testid="board-rows"></tbody></table>
<p id="empty" data-testid="board-empty" data-i18n="board.empty" hidden>暂无事件</p>
"""

INCIDENT_BODY = """<p><a href="/" data-i18n="back">返回看板</a></p>
<h1 data-testid="incident-heading"><span data-i18n="col.incident">事件</span>
<span id="incident-id">{incident_id}</span> <span id="incident-title"></span></h1>
<p><span class="live" id="live" data-testid="live-status" data-state="connecting"></span></p>
<p class="error" id="problem" data-testid="problem" hidden></p>
<p><button type="button" id="bundle" data-testid="incident-bundle" data-i18n="bundle.download">下载证据包</button>
<span class="error" id="bundle-problem" data-testid="bundle-problem" hidden></span></p>
<dl class="summary" id="summary" data-testid="incident-summary"></dl>
{map}<h2 data-i18n="lines.heading">预警、任务与资源</h2>
<table class="lines" data-testid="incident-lines"><thead><tr>
<th data-i18n="line.kind">类别</th><th data-i18n="line.key">编号</th>
<th data-i18n="line.state">状态</th><th data-i18n="col.lead">牵头单位</th>
<th data-i18n="line.assigned">指派</th><th data-i18n="line.deadline">期限</th>
<th data-i18n="col.overdue">逾期</th></tr></thead><tbody id="lines"></tbody></table>
<h2 data-i18n="acks.heading" data-testid="acks-heading">签收情况</h2>
<div class="acks" id="acks" data-testid="acks"></div>
<p id="acks-empty" data-testid="acks-empty" data-i18n="acks.none" hidden>无需签收的消息</p>
<h2 data-i18n="timeline.heading">时间线</h2>
<ol class="timeline" id="timeline" data-testid="timeline"></ol>
"""


def page(
    request: web.Request,
    page: str,
    body: str,
    *,
    extra: str = "",
    logout: bool,
    scripts: tuple[str, ...] = ("console.js",),
) -> str:
    """A whole page: the head (its scripts from static/, in order), the bar, `body`."""
    zone = html.escape(request.app[SETTINGS].zone)
    tags = (
        ""
        if page == "login"
        else "".join(f'<script src="/static/{name}" defer></script>\n' for name in scripts)
    )
    by_certificate = request.app[SETTINGS].certificates is not None
    bar = ""
    if logout:
        agency = html.escape(request[OFFICER].credential) if OFFICER in request else ""
        bar = OFFICER_BAR.format(agency=agency) if by_certificate else LOGOUT
    head = HEAD.format(
        scripts=tags, page=page, zone=zone, extra=extra, nav=NAV if logout else "", logout=bar
    )
    return head + body + TAIL


def html_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _login_html(request: web.Request, message_key: str = "", message: str = "") -> str:
    shown = LOGIN_MESSAGE.format(key=message_key, text=html.escape(message)) if message else ""
    body = LOGIN_BODY.format(max_token=MAX_TOKEN_CHARS, message=shown)
    return page(request, "login", body, logout=False)


async def login_page(request: web.Request) -> web.Response:
    if request.app[SETTINGS].certificates is not None:
        raise web.HTTPSeeOther("/")  # the certificate is the login
    return html_response(_login_html(request))


def refused_page(request: web.Request, reason: str) -> web.Response:
    """Certificate login: why this browser's certificate gives no access."""
    body = REFUSED_BODY.format(reason=html.escape(reason))
    return html_response(page(request, "login", body, logout=False), 403)


async def login(request: web.Request) -> web.Response:
    """POST /login: the token is good if the gateway answers GetBoard with it; the session
    cookie then holds only a random id (HttpOnly: the page's script never sees it)."""
    if request.app[SETTINGS].certificates is not None:
        raise web.HTTPSeeOther("/")
    form = await request.post()
    token = form.get("token")
    if not isinstance(token, str) or not 0 < len(token.strip()) <= MAX_TOKEN_CHARS:
        return html_response(
            _login_html(request, "login.missing", "请输入令牌 / Enter a token"), 400
        )
    token = token.strip()
    try:
        async with request.app[SETTINGS].connect(token) as client:
            await client.board(limit=1)
    except grpc.aio.AioRpcError as error:
        if error.code() in REFUSED:
            text = "令牌无效或无权查看看板 / Token refused by the gateway"
            return html_response(_login_html(request, "login.refused", text), 401)
        text = f"网关不可用 / Gateway unavailable ({error.code().name})"
        return html_response(_login_html(request, "", text), 503)
    session_id = request.app[SESSIONS].open(token)
    response = web.HTTPSeeOther("/")
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict", path="/")
    raise response


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].close(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def board_page(request: web.Request) -> web.Response:
    body = BOARD_BODY.format(map=MAP_PANEL)
    return html_response(
        page(request, "board", body, logout=True, scripts=("map.js", "console.js"))
    )


async def incident_page(request: web.Request) -> web.Response:
    try:
        incident_id = incident_id_of(request.match_info["incident_id"])
    except BadQuery as error:
        return html_response(
            page(request, "error", f"<p>{html.escape(str(error))}</p>", logout=True), 400
        )
    escaped = html.escape(incident_id)
    extra = f' data-incident-id="{escaped}"'
    body = INCIDENT_BODY.format(incident_id=escaped, map=MAP_PANEL)
    # map.js first: it listens for the incident console.js shows; audit.js: the bundle button
    scripts = ("map.js", "console.js", "audit.js")
    return html_response(page(request, "incident", body, extra=extra, logout=True, scripts=scripts))
