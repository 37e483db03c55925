"""StateRecord: the typed view of a `ksr:msg:<id>` hash."""

from __future__ import annotations

from runner.store.record import Field, StateRecord
from runner.store.replies import text, text_fields


def test_owed_lists_enqueued_but_unfinished_statuses() -> None:
    rec = {
        "state": "completed",
        "cb_0": "1",
        "cb_1": "2",
        "cb_2": "3",
        "cbd_0": "delivered",
        "cbd_1": "expired",
        "cbj_2": "x",
        "cbd_gone_url": "http://a/",
    }
    assert StateRecord(rec).callbacks(owed=True) == [2]
    assert StateRecord({"cb_99": "1", "cb_3": "1", "cbd_3": "gone"}).callbacks(owed=True) == [99]
    assert StateRecord({}).callbacks(owed=True) == []


def test_callbacks_marked_are_every_cb_status_ascending_whatever_finished() -> None:
    record = StateRecord({"cb_99": "1", "cb_0": "1", "cbd_0": "delivered", "cbd_gone_url": "u", "cb_x": "1"})
    assert record.callbacks() == [0, 99]
    assert record.callback_outcome(0) == "delivered" and record.callback_outcome(99) is None
    assert record.gone_url == "u"


def test_an_outcome_that_is_not_final_leaves_the_callback_owed() -> None:
    assert StateRecord({"cb_2": "1", "cbd_2": "sending"}).callbacks(owed=True) == [2]


def test_fields_parse_to_types_and_absent_ones_to_empty() -> None:
    record = StateRecord.from_reply(
        [b"state", b"created", b"job_name", b"j-1", b"namespace", b"ns", b"job_uid", b"u", b"created_at", b"1500"]
        + [b"term", b"7", b"webhook", b"", b"detail_0", b'{"jobId": "u"}', b"cbj_0", b"rq-1"]
    )
    assert (record.state, record.job_name, record.namespace, record.job_uid) == ("created", "j-1", "ns", "u")
    assert record.has_job and not record.is_terminal and record.term == 7
    assert record.created_at_ms == 1500 and record.created_at(default=0.0) == 1.5
    assert record.webhook is None and record.executor == "kubernetes" and record.pod_name == ""
    assert record.callback_detail(0) == {"jobId": "u"} and record.callback_chain(0) == "rq-1"
    assert record.callback_detail(1) == {} and record.callback_chain(1) is None


def test_unreadable_numbers_and_details_read_as_absent() -> None:
    record = StateRecord({"created_at": "soon", "term": "", "detail_2": "{not json", "detail_3": "[1]"})
    assert record.created_at_ms is None and record.created_at(default=9.0) == 9.0 and record.term is None
    assert record.callback_detail(2) == {} and record.callback_detail(3) == {}


def test_a_record_is_a_read_only_mapping_of_its_raw_fields() -> None:
    raw = {"state": "dead", "reason": "api_rejected"}
    record = StateRecord.from_reply({b"state": b"dead", b"reason": b"api_rejected"})
    assert record == raw and dict(record) == raw and record.is_terminal and not record.has_job
    assert StateRecord() == {} and not StateRecord()
    assert record[Field.STATE] == "dead"


def test_field_names_per_status() -> None:
    assert [Field.marked(2), Field.detail(2), Field.chain(2), Field.outcome(2)] == [
        "cb_2",
        "detail_2",
        "cbj_2",
        "cbd_2",
    ]


def test_text_decodes_bytes_and_replaces_what_is_not_utf8() -> None:
    assert text(b"m-1") == "m-1" and text(7) == "7" and text(b"\xff") == "\ufffd"
    assert text_fields([b"a", b"1", b"b", b"2"]) == {"a": "1", "b": "2"} == text_fields({b"a": b"1", "b": 2})
    assert text_fields(None) == {}


def test_attempts_and_first_owed_of_a_callback() -> None:
    record = StateRecord({"cb_0": "1796116612269", "cba_0": "3", "cb_1": "1", "cba_1": "x"})
    assert record.callback_attempts(0) == 3 and record.callback_first_owed(0) == 1796116612.269
    assert record.callback_attempts(1) == 0 and record.callback_first_owed(1) is None  # unreadable, not a time
    assert record.callback_attempts(2) == 0 and record.callback_first_owed(2) is None
    assert record.callbacks() == [0, 1]  # cba_ is not a mark
    assert Field.attempts(0) == "cba_0"


def test_each_status_gets_its_turn_and_the_owner_fields_are_not_marks() -> None:
    from runner.callbacks.owed import owed_next

    record = StateRecord({"cb_0": "1", "cbd_0": "delivered", "cb_1": "1", "cb_2": "1", "cb_99": "1", "cbd_99": "gone"})
    assert owed_next(record) == 1
    assert owed_next(StateRecord({**record, "cbd_1": "expired"})) == 2
    assert owed_next(StateRecord({**record, "cbd_1": "failed", "cbd_2": "delivered"})) is None
    owned = StateRecord({**record, "cb_owner": "m_3a1 1796116612269 1796116600269", "cb_seq": "3"})
    assert owned.callbacks() == [0, 1, 2, 99] and owned.callback_owner == "m_3a1"
