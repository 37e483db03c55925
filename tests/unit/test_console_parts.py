"""The console's pure parts: payload masking, the chart's geometry, the login/CSRF gate, the
ms time format. The pages themselves: tests/integration/test_console.py."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from probes.console.auth import Gate
from probes.console.chart import throughput_chart
from probes.console.masking import MASK, masked_payload
from probes.console.reads import ms_time
from runner.operate import may_redeliver
from runner.store.record import StateRecord

TOKEN = "t" * 20


def test_env_values_secret_names_and_webhook_credentials_are_masked():
    doc = {
        "id": "m1",
        "job": {"env": [{"name": "A", "value": "plain"}, {"name": "B"}], "args": ["--token", "x"]},
        "webhook": {"url": "https://user:pw@hook.example/cb?sig=abc#frag"},
        "extra": {"apiKey": "k", "nested": [{"client_secret": "s", "name": "kept"}], "password": ""},
    }
    masked, parsed = masked_payload(json.dumps(doc).encode())
    assert parsed
    assert masked["job"]["env"] == [{"name": "A", "value": MASK}, {"name": "B"}]
    assert masked["job"]["args"] == ["--token", "x"]  # structure and names stay: args are not secrets
    assert masked["webhook"]["url"] == f"https://user:{MASK}@hook.example/cb?{MASK}"
    assert masked["extra"] == {"apiKey": MASK, "nested": [{"client_secret": MASK, "name": "kept"}], "password": ""}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [(b"\xff\xfe<b>", "\ufffd\ufffd<b>"), (b"[1, 2]", [1, 2]), ("[" * 100_000, "[" * 100_000)],
)
def test_a_payload_that_is_no_object_is_shown_as_it_is(raw: bytes | str, shown: object):
    assert masked_payload(raw)[0] == shown


def test_the_chart_scales_to_a_round_peak_and_spans_the_width():
    rows = [{"minute": 100 + i, "dispatched": i, "completed": 0, "failed": 0} for i in range(60)]
    chart = throughput_chart(rows, width=600, height=160)
    assert chart.peak == 100  # 59 rounds up to 1, 2, 5 x 10^k
    points = [tuple(map(float, p.split(","))) for p in chart.lines["dispatched"].split()]
    assert points[0] == (24.0, 136.0) and points[-1][0] == 576.0
    assert points[-1][1] == pytest.approx(24 + 112 * (1 - 59 / 100), abs=0.05)
    assert chart.totals == {"dispatched": sum(range(60)), "completed": 0, "failed": 0}
    assert (chart.first_minute, chart.last_minute) == (100, 159)


def test_an_empty_series_draws_flat_lines():
    chart = throughput_chart([])
    assert chart.peak == 1 and chart.lines["failed"] == "" and chart.first_minute is None


def test_ms_time_is_utc_with_milliseconds():
    assert ms_time(1_700_000_000_007) == "2023-11-14T22:13:20.007Z"
    assert ms_time(None) is None


def _request(gate: Gate, app: Flask, *, headers: dict[str, str] | None = None, form: dict[str, str] | None = None):
    return app.test_request_context("/ui/x", method="POST", headers=headers or {}, data=form or {})


@pytest.mark.parametrize(
    ("actions", "token", "login", "headers", "csrf", "refusal"),
    [
        (False, TOKEN, True, {}, True, 403),  # actions off
        (True, None, False, {}, False, 403),  # no token configured: actions stay off
        (True, TOKEN, False, {}, False, 401),  # not logged in
        (True, TOKEN, False, {"Authorization": "Bearer wrong"}, False, 401),
        (True, TOKEN, False, {"Authorization": f"Bearer {TOKEN}"}, False, None),  # a script: no cookie to ride
        (True, TOKEN, True, {}, False, 403),  # logged in, no CSRF token
        (True, TOKEN, True, {}, True, None),
    ],
)
def test_who_may_act(actions, token, login, headers, csrf, refusal):
    gate = Gate(token=token, actions=actions, read_auth=False)
    app = Flask(__name__)
    app.secret_key = gate.secret_key()
    with app.test_request_context("/"):
        from flask import session

        if login:
            gate.log_in("alice")
        expected = session.get("csrf")
        stored = dict(session)
    form = {"csrf": expected} if csrf and expected else {}
    with _request(gate, app, headers=headers, form=form) as ctx:
        ctx.session.update(stored)
        got = gate.action_refusal(ctx.request)
    assert (got[0] if got else None) == refusal


def test_the_session_key_follows_the_token():
    one, two = Gate(token=TOKEN, actions=True, read_auth=True), Gate(token=TOKEN, actions=True, read_auth=True)
    assert one.secret_key() == two.secret_key()  # every worker of every replica accepts the cookie
    assert Gate(token="u" * 20, actions=True, read_auth=True).secret_key() != one.secret_key()
    assert (
        Gate(token=None, actions=False, read_auth=False).secret_key()
        != Gate(token=None, actions=False, read_auth=False).secret_key()
    )


@pytest.mark.parametrize(
    "fields, offered",
    [
        ({"cbd_2": "delivered"}, True),
        ({"cbd_2": "failed"}, True),
        ({"cbd_2": "expired"}, True),
        ({}, False),  # still in flight
        ({"cbd_2": "gone"}, False),
        ({"cbd_2": "delivered", "cbd_gone_url": "http://r.test/hook"}, False),  # 410 for an earlier status
        ({"cbd_2": "delivered", "cb_owner": "job 1 1"}, False),  # a courier's lease is written
        ({"cbd_2": "delivered", "webhook": ""}, False),
    ],
)
def test_a_callback_row_offers_redelivery_only_when_the_script_would_accept_it(
    fields: dict[str, str], offered: bool
) -> None:
    record = StateRecord({"webhook": "http://r.test/hook", "cb_2": "1", **fields})
    assert may_redeliver(record, 2) is offered
