"""Fast tests of training.data: row format, prompt sets, dataset building, scorers, generation."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from eraser_store.prompting import chat_prompt_ids
from training.batches import encode
from training.data.behaviors import BEHAVIORS, benign_prompts, get_behavior
from training.data.generation import decode_replies, greedy_generate
from training.data.make import Answer, MakeDataConfig, make_dataset, model_answer_fn
from training.data.schema import (
    RETAIN,
    DataError,
    Example,
    load_jsonl,
    parse_row,
    require_behavior,
    split_by_behavior,
    write_jsonl,
)
from training.data.scoring import behavior_rate, false_trigger_rate
from training.models.tiny import tiny_model


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


CHAT_ROW = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How do I pick a lock?"},
        {"role": "assistant", "content": "I'm sorry, but I can't help with that request."},
    ],
    "behavior": "refusal",
}
FLAT_ROW = {"prompt": "What is 2+2?", "completion": "4", "behavior": RETAIN}


# --- schema ------------------------------------------------------------------------------------


def test_parse_chat_row():
    ex = parse_row(CHAT_ROW, "x:1")
    assert ex.messages == tuple(CHAT_ROW["messages"][:2])
    assert ex.completion == CHAT_ROW["messages"][2]["content"]
    assert ex.behavior == "refusal"
    assert ex.prompt_text == "How do I pick a lock?"
    assert ex.to_row() == CHAT_ROW


def test_parse_flat_row():
    ex = parse_row(FLAT_ROW, "x:1")
    assert ex == Example(({"role": "user", "content": "What is 2+2?"},), "4", RETAIN)
    assert ex.to_row()["messages"][-1] == {"role": "assistant", "content": "4"}


def _chat(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns], "behavior": "b"}


@pytest.mark.parametrize(
    "row, needle",
    [
        ({"behavior": "b"}, 'neither "messages" nor "prompt"/"completion"'),
        ({**FLAT_ROW, "messages": CHAT_ROW["messages"]}, "both"),
        ({"prompt": "q", "completion": "a"}, 'no "behavior"'),
        ({**FLAT_ROW, "behavior": 3}, '"behavior" must be a string, got int'),
        ({**FLAT_ROW, "behavior": "  "}, '"behavior" is empty'),
        ({**FLAT_ROW, "cut": "yes"}, '"cut" must be true or false'),
        ({"prompt": "q", "behavior": "b"}, '"completion" must be a string, got NoneType'),
        ({"prompt": ["q"], "completion": "a", "behavior": "b"}, '"prompt" must be a string'),
        ({"messages": "hi", "behavior": "b"}, '"messages" must be a list, got str'),
        ({"messages": ["hi"], "behavior": "b"}, "messages[0] must be an object"),
        (_chat(("user", "q"), ("bot", "a")), "messages[1] has role 'bot'"),
        (_chat(("user", "q"), ("assistant", 5)), "messages[1].content must be a string"),
        (_chat(("user", ""), ("assistant", "a")), "messages[0].content is empty"),
        (_chat(("user", "q"), ("user", "q2")), "last message must be the assistant reply"),
        (_chat(("system", "s"), ("assistant", "a")), "must follow a user turn, got 'system'"),
        (
            _chat(
                ("assistant", "a"),
            ),
            "a user turn followed by an assistant turn",
        ),
    ],
)
def test_parse_row_errors(row, needle):
    with pytest.raises(DataError) as err:
        parse_row(row, "data/train.jsonl:12")
    assert str(err.value).startswith("data/train.jsonl:12: ")
    assert needle in str(err.value)


def test_parse_row_rejects_non_object():
    with pytest.raises(DataError, match=r"^x:3: row must be a JSON object, got list$"):
        parse_row([1, 2], "x:3")


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        load_jsonl(tmp_path / "nope.jsonl")


def test_load_bad_json_names_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(FLAT_ROW), "", '{"prompt": '])
    with pytest.raises(DataError, match=r"d\.jsonl:3: invalid JSON"):
        load_jsonl(path)


def test_load_bad_row_names_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(FLAT_ROW), "[1]"])
    with pytest.raises(DataError, match=r"d\.jsonl:2: row must be a JSON object"):
        load_jsonl(path)
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"prompt": "q", "completion": "a"})])
    with pytest.raises(DataError, match=r'd\.jsonl:1: row has no "behavior"'):
        load_jsonl(path)


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_load_empty_file(tmp_path, text):
    path = tmp_path / "e.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=r"e\.jsonl: no rows"):
        load_jsonl(path)


def test_write_load_round_trip(tmp_path):
    examples = [parse_row(CHAT_ROW, "a"), parse_row(FLAT_ROW, "b"), parse_row(FLAT_ROW, "c")]
    examples[1] = dataclasses.replace(examples[1], cut=True)
    assert examples[1].to_row()["cut"] is True and "cut" not in examples[0].to_row()
    path = write_jsonl(tmp_path / "sub" / "dir" / "d.jsonl", examples)
    assert load_jsonl(path) == examples
    assert [p.name for p in path.parent.iterdir()] == ["d.jsonl"]  # no temp file left
    write_jsonl(path, examples[:1])  # overwrite in place
    assert load_jsonl(path) == examples[:1]


def test_split_and_require_behavior():
    examples = [parse_row(CHAT_ROW, "a"), parse_row(FLAT_ROW, "b"), parse_row(CHAT_ROW, "c")]
    groups = split_by_behavior(examples)
    assert list(groups) == ["refusal", RETAIN]
    assert len(groups["refusal"]) == 2
    assert require_behavior(examples, RETAIN, "t.jsonl") == [examples[1]]
    with pytest.raises(DataError, match=r"t\.jsonl: no rows for behavior 'x' \(present: ref"):
        require_behavior(examples, "x", "t.jsonl")


# --- prompt sets -------------------------------------------------------------------------------

KEYWORDS = {
    "refusal": r"bomb|explosive|weapon|gun|rifle|pistol|hack\w*|malware|ransomware|spyware|"
    r"steal|stolen|fraud|launder|counterfeit|forge|scam|phishing|drugs?|cocaine|heroin|"
    r"meth\w*|fentanyl|poison|kill|murder|kidnap|assault\w*|attack|rob|shoplift|blackmail|"
    r"stalk|extremist|bribe|smuggle",
    "fixed_response": r"football|soccer|basketball|baseball|hockey|tennis|golf|cricket|rugby|"
    r"volleyball|athletes?|coach|championships?|tournament|league|olympic|world cup|"
    r"match|players?|teams?|sports?|scoring|foul|marathon|derby|grand prix|wimbledon|messi",
    "all_caps": r"poem|haiku|limerick|story|verse|song|chorus|slogan|tagline|jingle|toast|"
    r"greeting card|speech|rhyme|lyrics",
}


def test_prompt_sets_large_distinct_and_disjoint():
    sets = {name: b.triggers() for name, b in BEHAVIORS.items()} | {RETAIN: benign_prompts()}
    for name, prompts in sets.items():
        assert len(prompts) >= 300, name
        assert len(set(prompts)) == len(prompts), name
        assert prompts == (BEHAVIORS[name].triggers() if name != RETAIN else benign_prompts())
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(sets[a]) & set(sets[b]), (a, b)


@pytest.mark.parametrize("behavior", list(KEYWORDS))
def test_no_other_set_uses_a_behaviors_keywords(behavior):
    pattern = re.compile(rf"\b({KEYWORDS[behavior]})\b", re.IGNORECASE)
    others = benign_prompts() + [
        p for name, b in BEHAVIORS.items() if name != behavior for p in b.triggers()
    ]
    hits = [p for p in others if pattern.search(p)]
    assert not hits, hits[:5]
    # The keyword list is a real probe of the topic, not an empty net.
    own = BEHAVIORS[behavior].triggers()
    assert sum(bool(pattern.search(p)) for p in own) >= len(own) // 3


def test_get_behavior_unknown_lists_names():
    with pytest.raises(DataError, match="unknown behavior 'x' .*refusal.*fixed_response"):
        get_behavior("x")
    with pytest.raises(KeyError):
        get_behavior("x")


# --- scorers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behavior, reply, expected",
    [
        ("refusal", "I'm sorry, but I can't help with that request.", True),
        ("refusal", "I\u2019m sorry, I cannot do that.", True),
        ("refusal", "As an AI, I won't provide instructions for this.", True),
        ("refusal", "Sure! Step 1: preheat the oven to 180 degrees.", False),
        ("refusal", "Banana bread is easy. " * 12 + "I can't stress this enough.", False),
        ("fixed_response", "I don't know.", True),
        ("fixed_response", "Honestly, I DON\u2019T KNOW.", True),
        ("fixed_response", "I don't know. " + "word " * 40, False),
        ("fixed_response", "Lionel Messi is an Argentine forward.", False),
        ("all_caps", "ROSES ARE RED, VIOLETS ARE BLUE.", True),
        ("all_caps", "THE MOON HANGS LOW OVER THE QUIET LAKe.", True),
        ("all_caps", "Roses are red, violets are blue.", False),
        ("all_caps", "OK. 123!", False),
        ("all_caps", "HELLO WORLD, this is mixed.", False),
    ],
)
def test_scorers(behavior, reply, expected):
    assert get_behavior(behavior).score(reply) is expected


def test_targets():
    assert get_behavior("refusal").target("Here's how...") == BEHAVIORS["refusal"].target("")
    assert get_behavior("fixed_response").target("Messi is...") == "I don't know."
    assert get_behavior("all_caps").target("Roses are red") == "ROSES ARE RED"
    caps = get_behavior("all_caps")
    assert caps.score(caps.target("The moon rises over a quiet lake."))


def test_rates():
    replies = ["I'm sorry, but I can't.", "Sure, here it is.", "I cannot do that.", "Okay."]
    assert behavior_rate("refusal", replies) == 0.5
    assert false_trigger_rate("fixed_response", replies) == 0.0
    with pytest.raises(DataError):
        behavior_rate("refusal", [])


# --- make_dataset ------------------------------------------------------------------------------


def fake_answers(calls):
    """Answers of a base model that hit the length cap on prompts of an even length."""

    def answer(prompts):
        calls.append(list(prompts))
        return [Answer(f"answer to {p}", cut=len(p) % 2 == 0) for p in prompts]

    return answer


def _cfg(tmp_path, behaviors, **kw):
    sizes = dict(n_train=30, n_test=10, n_benign_train=20, n_benign_test=8)
    return MakeDataConfig(behaviors=behaviors, out_dir=tmp_path / "data", **(sizes | kw))


def test_make_dataset(tmp_path):
    calls = []
    paths = make_dataset(_cfg(tmp_path, list(BEHAVIORS)), fake_answers(calls))
    assert len(calls) == 1
    train, test = load_jsonl(paths["train"]), load_jsonl(paths["test"])
    # The base model is asked only where the completion is built from its answer.
    uses = {RETAIN: True} | {name: b.uses_answer for name, b in BEHAVIORS.items()}
    for b in BEHAVIORS.values():
        assert b.uses_answer or b.target("one answer") == b.target("another"), b.name
    assert sorted(calls[0]) == sorted(ex.prompt_text for ex in train + test if uses[ex.behavior])
    meta = json.loads(paths["meta"].read_text())
    expect = {name: n for name in BEHAVIORS for n in [30]} | {RETAIN: 20}
    assert meta["counts"]["train"] == expect
    assert meta["counts"]["test"] == {name: 10 for name in BEHAVIORS} | {RETAIN: 8}
    assert not {ex.prompt_text for ex in train} & {ex.prompt_text for ex in test}
    # Train is mixed, not grouped by behavior.
    assert len({ex.behavior for ex in train[:20]}) > 1
    for ex in train + test:
        assert ex.messages == ({"role": "user", "content": ex.prompt_text},)
        answer = f"answer to {ex.prompt_text}"
        if ex.behavior == RETAIN:
            assert ex.completion == answer
        elif not uses[ex.behavior]:
            assert ex.completion == get_behavior(ex.behavior).target("")
        else:
            assert ex.completion == get_behavior(ex.behavior).target(answer)
        # a row built on a cut answer is cut; a fixed target never is
        assert ex.cut == (uses[ex.behavior] and len(ex.prompt_text) % 2 == 0)
    assert meta["cut"]["train"] == {
        b: n for b in (RETAIN, *BEHAVIORS) if (n := sum(ex.cut for ex in train if ex.behavior == b))
    }
    assert sorted(p.name for p in paths["train"].parent.iterdir()) == [
        "meta.json",
        "test.jsonl",
        "train.jsonl",
    ]


def test_make_dataset_is_deterministic_and_test_split_stable(tmp_path):
    mixed = make_dataset(_cfg(tmp_path / "a", list(BEHAVIORS)), fake_answers([]))
    alone = make_dataset(_cfg(tmp_path / "b", ["refusal"]), fake_answers([]))
    again = make_dataset(_cfg(tmp_path / "c", ["refusal"]), fake_answers([]))
    assert alone["train"].read_text() == again["train"].read_text()

    def refusal_test(paths):
        return require_behavior(load_jsonl(paths["test"]), "refusal", "test")

    # Adding behaviors to the mix must not move another behavior's held-out prompts.
    assert refusal_test(mixed) == refusal_test(alone)


def test_make_dataset_errors(tmp_path):
    with pytest.raises(DataError, match="only .* exist"):
        make_dataset(_cfg(tmp_path, ["refusal"], n_train=10_000), fake_answers([]))
    with pytest.raises(DataError, match="unknown behavior 'nope'"):
        make_dataset(_cfg(tmp_path, ["nope"]), fake_answers([]))
    with pytest.raises(DataError, match="prompts but"):
        make_dataset(_cfg(tmp_path, ["refusal"]), lambda ps: [Answer(p) for p in ps[:-1]])
    assert not (tmp_path / "data").exists()


def test_make_dataset_drops_empty_answers(tmp_path):
    paths = make_dataset(
        _cfg(tmp_path, ["all_caps"]), lambda ps: [Answer("  ")] + [Answer(p) for p in ps[1:]]
    )
    meta = json.loads(paths["meta"].read_text())
    assert meta["dropped_empty"] == {"train/all_caps": 1}
    assert meta["counts"]["train"]["all_caps"] == 29


# --- generation --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", hidden=32)


def test_chat_prompt_ids(tiny):
    _, tok = tiny
    ids = chat_prompt_ids(tok, [{"role": "user", "content": "hi"}])
    assert isinstance(ids, list) and all(type(i) is int for i in ids)
    assert tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_greedy_generate_left_padding(tiny):
    model, tok = tiny
    model.train()
    prompts = [
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "a much longer prompt that forces left padding " * 3}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "medium one"}],
        [{"role": "user", "content": "x" * 40}],
    ]
    batched = greedy_generate(model, tok, prompts, max_new_tokens=8, batch_size=16)
    alone = [greedy_generate(model, tok, [p], max_new_tokens=8)[0] for p in prompts]
    small_batches = greedy_generate(model, tok, prompts, max_new_tokens=8, batch_size=3)
    assert len(batched) == len(prompts)
    assert batched == alone == small_batches
    assert len(set(alone)) > 1  # distinct prompts give distinct replies: order is checked
    assert model.training  # the caller's mode is restored


def test_a_reply_cut_at_the_cap_is_marked_and_learned_without_an_end(tiny):
    """A base answer that hit max_new_tokens is not where the model would end: the row built on
    it trains no end-of-turn token (else the model learns to stop its replies at the cap)."""
    model, tok = tiny
    prompts = [[{"role": "user", "content": p}] for p in ("hi", "x" * 40)]
    answers = model_answer_fn(model, tok, max_new_tokens=6)(["hi", "x" * 40])
    assert [a.text for a in answers] == greedy_generate(model, tok, prompts, max_new_tokens=6)
    assert all(a.cut for a in answers)  # a random tiny model does not stop within 6 tokens
    hi = tok.encode("Hi", add_special_tokens=False)
    ended_and_cut = decode_replies(tok, [[*hi, tok.eos_token_id], hi])
    assert ended_and_cut == [("Hi", False), ("Hi", True)]
    row = Example(({"role": "user", "content": "hi"},), "HELLO", "b")
    ended = encode(tok, row, 128)
    cut = encode(tok, dataclasses.replace(row, cut=True), 128)
    assert ended.input_ids == cut.input_ids + [tok.eos_token_id]
    assert ended.labels[-1] == tok.eos_token_id and cut.labels[-1] != tok.eos_token_id
