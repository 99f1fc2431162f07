"""scripts/side_by_side.py, the demo's last step, against a served tiny carrier."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import httpx
from server_helpers import ServedCarrier, make_eraser, running_server

from eraser_store import EraserStore, carrier_ref

SCRIPT = Path(__file__).parents[1] / "scripts" / "side_by_side.py"


def _row(behavior: str, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": "x"}]
    return json.dumps({"messages": messages, "behavior": behavior})


def test_prints_each_eraser_and_a_stacked_pair(
    fixed_response_carrier, tmp_path, capsys, monkeypatch
):
    carrier = fixed_response_carrier.carrier
    store = EraserStore(tmp_path / "store", carrier=carrier_ref(carrier))
    for name, behavior in (("erase-a", "fixed_response"), ("erase-b", "refusal")):
        store.add(make_eraser(carrier, tmp_path / name, name, seed=len(name), behavior=behavior))
    data = tmp_path / "test.jsonl"
    prompts = {b: [f"{b} question {i}?" for i in range(3)] for b in ("fixed_response", "refusal")}
    data.write_text(
        "\n".join(_row(b, p) for b, ps in prompts.items() for p in ps)
        + "\n"
        + _row("retain", "a benign question?")
        + "\n"
    )
    served = ServedCarrier(carrier, {}, tmp_path / "store", tmp_path / "none.json", carrier.name)
    with running_server(served) as (url, _):
        argv = ["side_by_side.py", "--url", url, "--data", str(data), "--max-tokens", "6"]
        monkeypatch.setattr(sys, "argv", argv)
        runpy.run_path(str(SCRIPT), run_name="__main__")
        out = capsys.readouterr().out

        def reply(prompt: str, erasers: list[str]) -> str:
            body = {
                "model": carrier.name,
                "messages": [{"role": "user", "content": prompt}],
                "erasers": erasers,
                "temperature": 0,
                "max_tokens": 6,
            }
            r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
            return " ".join(r.json()["choices"][0]["message"]["content"].split())

        stacked_prompt = prompts["refusal"][2]
        stacked_reply = reply(stacked_prompt, ["erase-a", "erase-b"])
    assert "=== eraser erase-a (switches off: fixed_response)" in out
    assert "=== eraser erase-b (switches off: refusal)" in out
    assert "=== erasers stacked: erase-a + erase-b" in out
    # Two questions per behavior and one benign per eraser; the third question of each goes to
    # the stacked section.
    for b, ps in prompts.items():
        assert out.count(f"[{b}] {ps[0]}") == 1 and out.count(f"[{b}] {ps[2]}") == 1
    assert out.count("[retain] a benign question?") == 2
    stacked = out[out.index(f"[refusal] {stacked_prompt}") :]
    assert stacked_reply and f"with erase-a + erase-b: {stacked_reply[:20]}" in stacked
