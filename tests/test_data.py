"""Fast tests of training.data: row format, prompt sets, splits, dataset building, scorers,
generation."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest

from eraser_store.prompting import chat_prompt_ids
from training.batches import encode
from training.data.behaviors import BEHAVIORS, get_behavior
from training.data.benign_prompts import benign_set, is_lookalike
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


def _texts(prompt_set):
    return [p.text for p in prompt_set.prompts]


def _all_sets():
    return {name: b.triggers() for name, b in BEHAVIORS.items()} | {RETAIN: benign_set()}


def test_prompt_sets_large_distinct_and_disjoint():
    sets = _all_sets()
    for name, ps in sets.items():
        prompts = _texts(ps)
        assert len(prompts) >= 300, name
        assert len(set(prompts)) == len(prompts), name
        assert ps == (BEHAVIORS[name].triggers() if name != RETAIN else benign_set())
        families = {p.family for p in ps.prompts}
        assert len(families) >= 4 and set(ps.test_families) < families, name
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(_texts(sets[a])) & set(_texts(sets[b])), (a, b)


def test_refusal_data_is_varied():
    """Many categories and phrasings, not one template grid: written requests beside templates."""
    ps = BEHAVIORS["refusal"].triggers()
    assert len({p.filler for p in ps.prompts}) >= 120
    assert len({p.family for p in ps.prompts}) >= 8
    assert sum(p.family == "written" for p in ps.prompts) >= 25


LOOKALIKES = {"refusal": "refusal-", "fixed_response": "sports-", "all_caps": "caps-"}


@pytest.mark.parametrize("behavior", list(KEYWORDS))
def test_no_other_set_uses_a_behaviors_keywords(behavior):
    """Everyday benign prompts and other behaviors' triggers stay off a behavior's topic; its
    look-alikes (benign on purpose) use its words, so the carrier learns the boundary."""
    pattern = re.compile(rf"\b({KEYWORDS[behavior]})\b", re.IGNORECASE)
    plain = [p.text for p in benign_set().prompts if not is_lookalike(p)]
    others = plain + [
        p for name, b in BEHAVIORS.items() if name != behavior for p in _texts(b.triggers())
    ]
    hits = [p for p in others if pattern.search(p)]
    assert not hits, hits[:5]
    # The keyword list is a real probe of the topic, not an empty net.
    own = _texts(BEHAVIORS[behavior].triggers())
    assert sum(bool(pattern.search(p)) for p in own) >= len(own) // 3
    alike = [p for p in benign_set().prompts if p.family.startswith(LOOKALIKES[behavior])]
    assert len(alike) >= 80 and all(is_lookalike(p) for p in alike)


def test_creative_lookalikes_start_like_creative_requests():
    alike = [p.text for p in benign_set().prompts if p.family.startswith("caps-")]
    assert sum(t.startswith("Write ") for t in alike) >= 60


XSTEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "xstest_prompts.csv"
_STOP_WORDS = (
    "a an the i you he she it we they my your his her our their me him us them is are was were "
    "be been do does did how what why who which when where can could would should will to of in "
    "on at for with by from about into and or but not so if than that this these those there "
    "some any all most more don't what's i'm it's get way best easiest"
)
_STOP = set(_STOP_WORDS.split())


def _content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower())) - _STOP


@pytest.mark.skipif(not XSTEST.is_file(), reason="../shared/data/xstest_prompts.csv not present")
def test_no_xstest_prompt_or_close_paraphrase_in_any_set():
    """XSTest is for evaluation only: none of its prompts (nor one sharing most content words)
    is in a built-in set, so no split can hold one."""
    with XSTEST.open(encoding="utf-8", newline="") as f:
        xstest = [row["prompt"] for row in csv.DictReader(f)]
    assert len(xstest) > 200
    ours = {t for ps in _all_sets().values() for t in _texts(ps)}
    norm = {re.sub(r"\W+", " ", t.lower()).strip() for t in ours}
    assert not [x for x in xstest if re.sub(r"\W+", " ", x.lower()).strip() in norm]
    close = []
    for x in xstest:
        wx = _content_words(x)
        for t in ours:
            wt = _content_words(t)
            shared = len(wx & wt)
            if shared >= 2 and shared / len(wx | wt) >= 0.5:
                close.append((x, t))
    assert not close, close[:5]


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
    sizes = dict(
        n_train=30, n_dev=12, n_test=10, n_benign_train=20, n_benign_dev=9, n_benign_test=8
    )
    return MakeDataConfig(behaviors=behaviors, out_dir=tmp_path / "data", **(sizes | kw))


def test_make_dataset(tmp_path):
    calls = []
    paths = make_dataset(_cfg(tmp_path, list(BEHAVIORS)), fake_answers(calls))
    assert len(calls) == 1
    train, dev, test = (load_jsonl(paths[s]) for s in ("train", "dev", "test"))
    # The base model is asked only where the completion is built from its answer.
    uses = {RETAIN: True} | {name: b.uses_answer for name, b in BEHAVIORS.items()}
    for b in BEHAVIORS.values():
        assert b.uses_answer or b.target("one answer") == b.target("another"), b.name
    rows = train + dev + test
    assert sorted(calls[0]) == sorted(ex.prompt_text for ex in rows if uses[ex.behavior])
    meta = json.loads(paths["meta"].read_text())
    expect = {name: n for name in BEHAVIORS for n in [30]} | {RETAIN: 20}
    assert meta["counts"]["train"] == expect
    assert meta["counts"]["dev"] == {name: 12 for name in BEHAVIORS} | {RETAIN: 9}
    assert meta["counts"]["test"] == {name: 10 for name in BEHAVIORS} | {RETAIN: 8}
    texts = [{ex.prompt_text for ex in split} for split in (train, dev, test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    # Train is mixed, not grouped by behavior.
    assert len({ex.behavior for ex in train[:20]}) > 1
    for ex in rows:
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
        "dev.jsonl",
        "meta.json",
        "test.jsonl",
        "train.jsonl",
    ]


def _prompts_by_text():
    return {p.text: p for ps in _all_sets().values() for p in ps.prompts}


def test_splits_hold_out_fillers_and_template_families(tmp_path):
    """Test prompts use fillers in neither train nor dev, and every set's test families appear
    in test only; meta.json says which groups went where."""
    paths = make_dataset(_cfg(tmp_path, list(BEHAVIORS)), fake_answers([]))
    meta = json.loads(paths["meta"].read_text())
    known = _prompts_by_text()
    rows = {s: load_jsonl(paths[s]) for s in ("train", "dev", "test")}
    for tag, info in meta["splits"].items():
        prompts = {s: [known[ex.prompt_text] for ex in rows[s] if ex.behavior == tag] for s in rows}
        fillers = {s: {p.filler for p in prompts[s]} for s in rows}
        assert not fillers["test"] & (fillers["train"] | fillers["dev"]), tag
        assert not fillers["dev"] & fillers["train"], tag
        held_out = set(info["test_families"])
        assert held_out & {p.family for p in prompts["test"]}, tag  # an unseen family is tested
        assert not held_out & {p.family for p in prompts["train"] + prompts["dev"]}, tag
        for s in rows:
            assert fillers[s] <= set(info["fillers"][s]), (tag, s)
            assert info["families"][s] == sorted({p.family for p in prompts[s]}), (tag, s)
    assert all(meta["splits"][RETAIN]["lookalikes"][s] > 0 for s in rows)


def test_train_draws_many_phrasings_and_topics(tmp_path):
    paths = make_dataset(_cfg(tmp_path, ["refusal"], n_train=60), fake_answers([]))
    known = _prompts_by_text()
    train = [known[ex.prompt_text] for ex in load_jsonl(paths["train"])]
    harmful = [p for p in train if p in BEHAVIORS["refusal"].triggers().prompts]
    assert len({p.family for p in harmful}) >= 8  # every trained family, round robin
    assert len({p.filler for p in harmful}) >= 40  # spread over topics, not a few of them


def test_make_dataset_is_deterministic_and_test_split_stable(tmp_path):
    mixed = make_dataset(_cfg(tmp_path / "a", list(BEHAVIORS)), fake_answers([]))
    alone = make_dataset(_cfg(tmp_path / "b", ["refusal"]), fake_answers([]))
    again = make_dataset(_cfg(tmp_path / "c", ["refusal"]), fake_answers([]))
    for split in ("train", "dev", "test"):
        assert alone[split].read_text() == again[split].read_text()
    splits = [json.loads(p["meta"].read_text())["splits"] for p in (alone, again)]
    assert splits[0] == splits[1]
    other_seed = make_dataset(_cfg(tmp_path / "d", ["refusal"], seed=1), fake_answers([]))
    assert other_seed["test"].read_text() != alone["test"].read_text()

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
