import pytest

from llamaforge.corpus.normalize import RowProblem, detect_format, normalize_row, row_category


def _reason(obj, fmt="auto"):
    with pytest.raises(RowProblem) as exc:
        normalize_row(obj, fmt)
    return exc.value.reason


def test_messages_keep_text_exactly():
    row = {"messages": [{"role": "system", "content": " sys "}, {"role": "user", "content": "hi\r\n"},
                        {"role": "assistant", "content": "  yo  ", "name": "x"}]}
    assert normalize_row(row) == [{"role": "system", "content": " sys "}, {"role": "user", "content": "hi\r\n"},
                                  {"role": "assistant", "content": "  yo  "}]


def test_sharegpt_roles_are_mapped():
    row = {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"},
                             {"from": "gpt", "value": "a"}]}
    assert [m["role"] for m in normalize_row(row)] == ["system", "user", "assistant"]


def test_alpaca_joins_instruction_and_input():
    assert normalize_row({"instruction": "Translate", "input": "hola", "output": "hello"})[0]["content"] == \
        "Translate\n\nhola"
    assert normalize_row({"instruction": "Say hi", "input": "", "output": "hi"})[0]["content"] == "Say hi"
    # null optional fields count as absent; a system field becomes the system turn
    rows = normalize_row({"instruction": "Q", "input": None, "output": "A", "system": "S"})
    assert rows == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A"}]


def test_prompt_response_and_completion_and_text():
    assert normalize_row({"prompt": "p", "response": "r"})[1] == {"role": "assistant", "content": "r"}
    assert normalize_row({"prompt": "p", "completion": "c"})[1]["content"] == "c"
    assert normalize_row({"text": "plain"}) == [{"role": "assistant", "content": "plain"}]


@pytest.mark.parametrize("row,fmt", [
    ({"messages": []}, "messages"), ({"conversations": []}, "sharegpt"),
    ({"instruction": "a", "output": "b"}, "alpaca"), ({"prompt": "a", "response": "b"}, "prompt_response"),
    ({"text": "t"}, "text"),
])
def test_auto_detects_each_format(row, fmt):
    assert detect_format(row) == fmt


@pytest.mark.parametrize("obj,fmt,reason", [
    ([1, 2], "auto", "not_an_object"),
    ("text", "auto", "not_an_object"),
    ({"foo": 1}, "auto", "unknown_format"),
    ({"messages": "hi"}, "auto", "wrong_type"),
    ({"messages": []}, "auto", "empty_conversation"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]}, "auto", "wrong_type"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}, "auto", "wrong_type"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}, "auto", "missing_field"),
    ({"messages": [{"role": "tool", "content": "q"}, {"role": "assistant", "content": "a"}]}, "auto", "unknown_role"),
    ({"messages": [{"role": "user", "content": "q"}]}, "auto", "no_final_assistant"),
    ({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}]}, "auto", "empty_message"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "a"}]}, "auto", "misplaced_system"),
    ({"messages": ["hi"]}, "auto", "wrong_type"),
    ({"conversations": [{"from": "bot", "value": "a"}]}, "auto", "unknown_role"),
    ({"instruction": "q"}, "auto", "missing_field"),
    ({"instruction": 5, "output": "a"}, "auto", "wrong_type"),
    ({"instruction": "q", "input": 7, "output": "a"}, "auto", "wrong_type"),
    ({"prompt": "q", "response": ["a"]}, "auto", "wrong_type"),
    ({"text": 1.5}, "auto", "wrong_type"),
    ({"text": "x"}, "alpaca", "missing_field"),
])
def test_bad_rows_name_their_reason(obj, fmt, reason):
    assert _reason(obj, fmt) == reason


def test_numbers_are_never_coerced_to_text():
    assert _reason({"prompt": 12, "response": "a"}) == "wrong_type"
    assert _reason({"text": True}) == "wrong_type"


def test_category_from_field_or_fixed():
    assert row_category({"_category": "code"}, None, "_category") == "code"
    assert row_category({}, "general", "_category") == "general"
    assert row_category({"_category": "code"}, "general", None) == "general"
    for obj, reason in (({}, "missing_field"), ({"_category": 3}, "wrong_type"), ({"_category": ""}, "empty_message")):
        with pytest.raises(RowProblem) as exc:
            row_category(obj, None, "_category")
        assert exc.value.reason == reason
