"""Reports for dashboards and accountants: the CSV export of usage records and the daily rollup."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import TYPE_CHECKING

import msgspec

from vectorengine.billing.money import usd
from vectorengine.errors import GatewayError, Kind
from vectorengine.http import admin_schema as s
from vectorengine.http.admin_base import AdminRequest, Reply, Route, int_param, page_limit, time_param
from vectorengine.store.records import StoredUsage, UsageFilter

if TYPE_CHECKING:
    from vectorengine.http.admin_api import AdminAPI

MAX_EXPORT_ROWS = 1_000_000
_PAGE = 5_000

CSV_COLUMNS = (
    "request_id",
    "time",
    "user_id",
    "token_id",
    "model",
    "upstream_model",
    "channel_id",
    "status",
    "error_kind",
    "stream",
    "prompt_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "usage_estimated",
    "input_per_1m_micro_usd",
    "cached_input_per_1m_micro_usd",
    "output_per_1m_micro_usd",
    "reasoning_per_1m_micro_usd",
    "multiplier_ppm",
    "reserved_micro_usd",
    "cost_micro_usd",
    "unbilled_micro_usd",
    "cost_usd",
    "latency_ms",
)


def _row(r: StoredUsage) -> list[object]:
    p = r.price
    return [
        r.request_id,
        dt.datetime.fromtimestamp(r.created_at / 1000, dt.UTC).isoformat(timespec="milliseconds"),
        r.user_id,
        r.token_id,
        r.model,
        r.upstream_model,
        r.channel_id,
        r.status,
        r.error_kind,
        int(r.stream),
        r.prompt_tokens,
        r.cached_tokens,
        r.cache_write_tokens,
        r.completion_tokens,
        r.reasoning_tokens,
        int(r.usage_estimated),
        p.input if p else "",
        (p.input if p.cached_input is None else p.cached_input) if p else "",
        p.output if p else "",
        (p.output if p.reasoning is None else p.reasoning) if p else "",
        r.multiplier_ppm,
        r.reserved_micro_usd,
        r.cost_micro_usd,
        r.unbilled_micro_usd,
        usd(r.cost_micro_usd),
        round(r.latency_ms, 3),
    ]


async def usage_csv(api: AdminAPI, req: AdminRequest) -> Reply:
    """Every usage record in ``[since, until)`` (optionally one user's or token's), oldest first."""
    q = req.query
    since, until = time_param("since", q.get("since")), time_param("until", q.get("until"))
    if since is None or until is None:
        raise GatewayError(Kind.INVALID_REQUEST, "`since` and `until` are required.", param="since")
    flt = UsageFilter(
        since_ms=since,
        until_ms=until,
        user_id=int_param(req, "user", q["user"]) if "user" in q else None,
        token_id=int_param(req, "token", q["token"]) if "token" in q else None,
    )
    rows: list[StoredUsage] = []
    after = None
    while True:
        page = await api.store.query_usage(flt, limit=_PAGE, after=after)
        rows += page
        if len(page) < _PAGE:
            break
        if len(rows) >= MAX_EXPORT_ROWS:
            raise GatewayError(
                Kind.INVALID_REQUEST,
                f"More than {MAX_EXPORT_ROWS} records: export a shorter range.",
                param="until",
            )
        after = page[-1].id
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_row(r) for r in reversed(rows))
    return Reply(200, out.getvalue().encode(), content_type="text/csv; charset=utf-8")


def _day(req: AdminRequest, name: str, default: str) -> str:
    value = req.query.get(name, default)
    if len(value) != 8 or not value.isdigit():
        raise GatewayError(Kind.INVALID_REQUEST, f"`{name}` must be a day as YYYYMMDD.", param=name)
    return value


async def daily_rollup(api: AdminAPI, req: AdminRequest) -> Reply:
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    since, until = _day(req, "since", today), _day(req, "until", today)
    user = int_param(req, "user", req.query["user"]) if "user" in req.query else None
    token = int_param(req, "token", req.query["token"]) if "token" in req.query else None
    rows = await api.store.accounts.daily(since, until, user_id=user, token_id=token)
    return Reply(200, [msgspec.convert(r, s.RollupOut) for r in rows])


async def list_alerts(api: AdminAPI, req: AdminRequest) -> Reply:
    q = req.query
    limit = page_limit(req)
    after = int_param(req, "after", q["after"]) if "after" in q else None
    rows = await api.store.alerts.page(
        limit=limit + 1, after=after, kind=q.get("kind"), since_ms=time_param("since", q.get("since"))
    )
    more = len(rows) > limit
    rows = rows[:limit]
    data = [msgspec.convert(r, s.AlertOut) for r in rows]
    return Reply(200, s.AlertPage(data=data, has_more=more, next_after=rows[-1]["id"] if more else None))


REPORT_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/alerts",
        list_alerts,
        "Alerts raised (caps, low balances, anomalies, auth failure bursts), newest first",
        response=s.AlertPage,
        query=(
            ("kind", "string", "cap_threshold | balance_low | anomaly | token_suspended | auth_failures"),
            ("since", "string", "unix seconds or ISO 8601"),
            ("limit", "integer", "page size, 1-1000 (default 100)"),
            ("after", "integer", "the `next_after` of the previous page"),
        ),
    ),
    Route(
        "GET",
        "/api/usage.csv",
        usage_csv,
        "Usage records of a time range as CSV, with each request's unit prices, multiplier and cost",
        query=(
            ("since", "string", "inclusive lower bound: unix seconds or ISO 8601 (required)"),
            ("until", "string", "exclusive upper bound: unix seconds or ISO 8601 (required)"),
            ("user", "integer", "user id"),
            ("token", "integer", "token id"),
        ),
    ),
    Route(
        "GET",
        "/api/rollups/daily",
        daily_rollup,
        "Requests, tokens and cost per day (billing time zone), user, token, model and channel",
        response=list[s.RollupOut],
        query=(
            ("since", "string", "first day, YYYYMMDD (default today, UTC)"),
            ("until", "string", "last day, YYYYMMDD, inclusive (default today, UTC)"),
            ("user", "integer", "user id"),
            ("token", "integer", "token id"),
        ),
    ),
)
