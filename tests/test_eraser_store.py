"""Eraser file format and store: round trip, PEFT compatibility, every refusal, atomicity under
failures and crashes, concurrent adds, corruption, carrier refs and the `erasers` CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import torch
from safetensors.torch import save as save_safetensors

import eraser_store.store as store_mod
from eraser_store import (
    CarrierRef,
    EraserCorrupted,
    EraserFormatError,
    EraserNotFound,
    EraserRefused,
    EraserStore,
    EraserStoreError,
    carrier_ref,
    parse_ref,
    read_eraser,
    write_eraser,
)
from eraser_store.backends import EraserStoreUnavailable, Store, open_store
from eraser_store.cli import add_commands
from eraser_store.format import CONFIG_FILE, SIDECAR_FILE, WEIGHTS_FILE
from eraser_store.pg_store import PgEraserStore

FP = "sha256:" + "a" * 64
OTHER_FP = "sha256:" + "b" * 64
HIDDEN = 32
# fork: children start at once and inherit the test's imports (spawn would re-import torch).
MP = multiprocessing.get_context("fork")


def make_eraser(path: Path, *, name="fix", hidden=HIDDEN, tokens=4, fp=FP, seed=0) -> Path:
    emb = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(seed))
    return write_eraser(
        path,
        emb,
        name=name,
        behavior="fixed_response",
        carrier_fingerprint=fp,
        num_layers=2,
        num_attention_heads=4,
        channel_count=12,
        training={"final_loss": 0.25, "steps": 10},
    )


def rewrite_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Replace the safetensors file and fix the sidecar's sha256, so only the content is wrong."""
    data = save_safetensors(tensors)
    (path / "adapter_model.safetensors").write_bytes(data)
    edit_json(path / "eraser.json", sha256=hashlib.sha256(data).hexdigest())


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def flip_byte(path: Path, offset: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- format


def test_round_trip(tmp_path):
    emb = torch.randn(5, HIDDEN)
    out = write_eraser(
        tmp_path / "e",
        emb,
        name="fix.v1",
        behavior="fixed_response",
        carrier_fingerprint=FP,
        num_layers=2,
        num_attention_heads=4,
        channel_count=7,
        training={"loss": [1.0, 0.5]},
        base_model="runs/base",
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "eraser.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["e"]  # no temporary sibling left
    eraser = read_eraser(out)
    assert torch.equal(eraser.embeddings, emb) and eraser.embeddings.dtype == torch.float32
    meta = eraser.meta
    assert (meta.name, meta.behavior, meta.carrier_fingerprint) == ("fix.v1", "fixed_response", FP)
    assert (meta.hidden_size, meta.num_virtual_tokens, meta.channel_count) == (HIDDEN, 5, 7)
    assert meta.training == {"loss": [1.0, 0.5]} and meta.dtype == "float32"
    assert meta.created.endswith("+00:00")
    assert read_eraser(out).meta == meta and hash(meta) == hash(read_eraser(out).meta)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["token_dim"] == HIDDEN
    assert config["base_model_name_or_path"] == "runs/base"


def test_peft_loads_eraser(tmp_path):
    peft = pytest.importorskip("peft")
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = transformers.LlamaForCausalLM(config)
    path = make_eraser(tmp_path / "e", tokens=6)
    peft_model = peft.PeftModel.from_pretrained(model, str(path))
    weight = peft_model.prompt_encoder["default"].embedding.weight
    assert torch.equal(weight, read_eraser(path).embeddings)
    logits = peft_model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 6 + 3, 300)  # the soft prompt is prepended


@pytest.mark.parametrize(
    "embeddings, kwargs, match",
    [
        (torch.tensor([[0.0, float("nan")]]), {}, "non-finite"),
        (torch.zeros(4), {}, "2-D"),
        (torch.zeros(0, 4), {}, "2-D"),
        (torch.zeros(2, 4), {"name": ""}, "bad eraser name"),
        (torch.zeros(2, 4), {"name": "../up"}, "bad eraser name"),
        (torch.zeros(2, 4), {"training": {"x": object()}}, "JSON"),
        (torch.zeros(2, 4), {"num_layers": 0}, "num_layers"),
    ],
)
def test_write_refuses_bad_input(tmp_path, embeddings, kwargs, match):
    args = dict(
        name="fix",
        behavior="b",
        carrier_fingerprint=FP,
        num_layers=2,
        num_attention_heads=4,
        channel_count=1,
        training={},
    )
    with pytest.raises(EraserFormatError, match=match):
        write_eraser(tmp_path / "e", embeddings, **{**args, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_existing_dir(tmp_path):
    path = make_eraser(tmp_path / "e")
    with pytest.raises(FileExistsError):
        make_eraser(path)


def _missing_file(p):
    (p / "adapter_config.json").unlink()


def _bad_json(p):
    (p / "eraser.json").write_text("{not json")


def _extra_tensor(p):
    rewrite_weights(p, {"prompt_embeddings": torch.zeros(4, HIDDEN), "x": torch.zeros(1)})


def _nan(p):
    rewrite_weights(p, {"prompt_embeddings": torch.full((4, HIDDEN), float("nan"))})


def _wrong_shape(p):
    rewrite_weights(p, {"prompt_embeddings": torch.zeros(3, HIDDEN)})


def _missing_key(p):
    data = json.loads((p / "eraser.json").read_text())
    del data["behavior"]
    (p / "eraser.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, match",
    [
        (_missing_file, "missing adapter_config.json"),
        (_bad_json, "not valid JSON"),
        (lambda p: edit_json(p / "eraser.json", format="other"), "not an eraser sidecar"),
        (lambda p: edit_json(p / "adapter_config.json", peft_type="LORA"), "peft_type"),
        (_missing_key, "missing key.*behavior"),
        (lambda p: edit_json(p / "eraser.json", extra=1), "unexpected key.*extra"),
        (lambda p: edit_json(p / "adapter_config.json", token_dim=16), "do not match"),
        (lambda p: edit_json(p / "eraser.json", hidden_size="32"), "wrong type"),
        (_extra_tensor, "exactly one tensor"),
        (_wrong_shape, "shape"),
        (_nan, "non-finite"),
        (lambda p: flip_byte(p / "adapter_model.safetensors"), "corrupted"),
    ],
)
def test_read_rejects(tmp_path, damage, match):
    path = make_eraser(tmp_path / "e")
    damage(path)
    with pytest.raises(EraserFormatError, match=match) as info:
        read_eraser(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_rejects_missing_dir(tmp_path):
    with pytest.raises(EraserFormatError, match="no such eraser directory"):
        read_eraser(tmp_path / "nope")


def test_read_accepts_fields_peft_adds(tmp_path):
    path = make_eraser(tmp_path / "e")
    edit_json(path / "adapter_config.json", peft_version="0.21.2", modules_to_save=None)
    assert read_eraser(path).meta.name == "fix"


# ---- carrier refs


def write_carrier(path: Path, config: dict, manifest: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    manifest = {"format": "sft-eraser-carrier", "fingerprint": FP} if manifest is None else manifest
    (path / "carrier.json").write_text(json.dumps(manifest))
    return path


def test_carrier_ref(tmp_path):
    llama = write_carrier(tmp_path / "llama", {"hidden_size": HIDDEN, "model_type": "llama"})
    assert carrier_ref(llama) == CarrierRef(fingerprint=FP, hidden_size=HIDDEN)
    config = {"hidden_size": HIDDEN, "max_position_embeddings": 64}
    assert carrier_ref(write_carrier(tmp_path / "ctx", config)).max_positions == 64
    gpt2 = write_carrier(tmp_path / "gpt2", {"n_embd": 48, "model_type": "gpt2", "n_positions": 9})
    assert (carrier_ref(gpt2).hidden_size, carrier_ref(gpt2).max_positions) == (48, 9)
    with pytest.raises(EraserFormatError, match="not a carrier directory"):
        carrier_ref(tmp_path)
    other = write_carrier(tmp_path / "other", {"hidden_size": 8}, {"format": "something"})
    with pytest.raises(EraserFormatError, match="not a carrier manifest"):
        carrier_ref(other)


# ---- store (both back ends)


@pytest.fixture(params=["directory", "postgresql"])
def store_spec(request, tmp_path) -> str:
    """Where a new, empty store goes: a directory, or a database URL."""
    if request.param == "directory":
        return str(tmp_path / "store")
    return request.getfixturevalue("pg_database")


def stored_files(store, rec) -> dict[str, bytes]:
    if isinstance(store, PgEraserStore):
        with psycopg.connect(store.url) as db:
            row = db.execute(
                "SELECT config, weights, sidecar FROM erasers WHERE name = %s AND version = %s",
                (rec.name, rec.version),
            ).fetchone()
        return dict(zip((CONFIG_FILE, WEIGHTS_FILE, SIDECAR_FILE), map(bytes, row), strict=True))
    return {f: (rec.path / f).read_bytes() for f in (CONFIG_FILE, WEIGHTS_FILE, SIDECAR_FILE)}


def damage_stored(store, rec, **files: bytes) -> None:
    """Overwrite some of a registered eraser's files where the store keeps them (WEIGHTS_FILE
    as weights=..., SIDECAR_FILE as sidecar=...)."""
    names = {"weights": WEIGHTS_FILE, "sidecar": SIDECAR_FILE}
    if isinstance(store, PgEraserStore):
        with psycopg.connect(store.url) as db:
            for column, data in files.items():
                db.execute(
                    f"UPDATE erasers SET {column} = %s WHERE name = %s AND version = %s",
                    (data, rec.name, rec.version),
                )
        return
    for column, data in files.items():
        (rec.path / names[column]).write_bytes(data)


def flip_stored_byte(store, rec) -> None:
    weights = bytearray(stored_files(store, rec)[WEIGHTS_FILE])
    weights[-3] ^= 0xFF
    damage_stored(store, rec, weights=bytes(weights))


def test_store_add_get_list_versions_remove(tmp_path, store_spec):
    store = open_store(store_spec)
    assert isinstance(store, Store)  # the interface the CLI and the server use
    a1 = store.add(make_eraser(tmp_path / "a1", seed=1))
    a2 = store.add(make_eraser(tmp_path / "a2", seed=2))
    b1 = store.add(make_eraser(tmp_path / "b1", seed=3), name="other")
    assert (a1.ref, a2.ref, b1.ref) == ("fix@1", "fix@2", "other@1") and a2.tokens == 4
    if isinstance(store, EraserStore):
        assert a2.path == tmp_path / "store" / "objects" / "fix" / "2"
    else:
        assert a2.path is None
    assert torch.equal(store.get("fix").embeddings, read_eraser(tmp_path / "a2").embeddings)
    assert torch.equal(store.get("fix", 1).embeddings, read_eraser(tmp_path / "a1").embeddings)
    assert store.get("other").meta.name == "fix"  # files are stored byte for byte
    assert stored_files(store, b1) == {
        f: (tmp_path / "b1" / f).read_bytes() for f in (CONFIG_FILE, WEIGHTS_FILE, SIDECAR_FILE)
    }
    assert [r.ref for r in store.list()] == ["fix@2", "other@1"]
    assert [r.ref for r in store.list(all_versions=True)] == ["fix@1", "fix@2", "other@1"]
    assert store.versions("fix") == [1, 2] and store.record("fix") == a2
    assert store.verify() == []

    assert store.remove("fix", 2) == [2]
    assert store.record("fix") == a1
    if isinstance(store, EraserStore):
        assert not a2.path.exists()
    # A removed version number is never given out again: fix@2 always meant a2's bytes.
    assert store.add(tmp_path / "a1").ref == "fix@3"
    assert store.remove("fix") == [1, 3]
    assert [r.ref for r in store.list()] == ["other@1"]
    assert open_store(store_spec).list() == store.list()  # reopening sees the same
    assert store.gc() == [] and store.verify() == []


def test_store_refusals(tmp_path, store_spec):
    src = make_eraser(tmp_path / "e")
    carrier = CarrierRef(fingerprint=OTHER_FP, hidden_size=HIDDEN)
    store = open_store(store_spec, carrier=carrier)
    with pytest.raises(EraserRefused, match="trained against carrier.*pass force=True"):
        store.add(src)
    assert store.list() == []
    assert store.add(src, force=True).ref == "fix@1"
    assert store.verify() == [f"fix@1: trained against carrier {FP}, not {OTHER_FP}"]

    wide = make_eraser(tmp_path / "wide", hidden=HIDDEN * 2, fp=OTHER_FP)
    for force in (False, True):  # a hidden-size mismatch cannot be forced
        with pytest.raises(EraserRefused, match="hidden size 64 does not match the carrier's 32"):
            store.add(wide, force=force)

    nan = make_eraser(tmp_path / "nan")
    rewrite_weights(nan, {"prompt_embeddings": torch.full((4, HIDDEN), float("nan"))})
    with pytest.raises(EraserFormatError, match="non-finite"):
        store.add(nan, force=True)
    with pytest.raises(EraserFormatError, match="no such eraser directory"):
        store.add(tmp_path / "missing")
    for bad_name in ("a/b", "fix\n"):
        with pytest.raises(EraserStoreError, match="bad eraser name"):
            store.add(src, name=bad_name, force=True)

    with pytest.raises(EraserNotFound, match=f"no eraser named 'nope' in {store.location}.*fix"):
        store.get("nope")
    with pytest.raises(EraserNotFound, match=r"no eraser fix@7 .*versions: 1"):
        store.get("fix", 7)
    with pytest.raises(EraserNotFound):
        store.remove("nope")
    assert [r.ref for r in store.list(all_versions=True)] == ["fix@1"]


def test_an_eraser_must_leave_room_in_the_context(tmp_path):
    """One prompt token and one reply token after the eraser at least; no force overrides it."""
    carrier = CarrierRef(fingerprint=FP, hidden_size=HIDDEN, max_positions=6)
    store = EraserStore(tmp_path / "store", carrier=carrier)
    for force in (False, True):
        with pytest.raises(EraserRefused, match="5 virtual tokens leave no room.*context of 6"):
            store.add(make_eraser(tmp_path / f"long{force}", tokens=5), force=force)
    assert store.add(make_eraser(tmp_path / "fits", tokens=4)).tokens == 4


def test_only_uploads_of_dead_processes_are_leftovers(tmp_path):
    store = EraserStore(tmp_path / "store")
    dead = store.tmp / "upload-999999999-00ff"
    dead.mkdir()
    with store.upload_dir() as live:
        assert live.parent == store.tmp and live.name.startswith(f"upload-{os.getpid()}-")
        assert store.verify() == [f"leftover {dead}: interrupted add or upload (gc removes it)"]
        assert store.gc() == [dead] and live.exists()
        assert store.clean_tmp() == []
    assert not live.exists()
    killed = MP.Process(target=_killed_during_upload, args=(tmp_path / "store",))
    killed.start()
    killed.join(60)
    (left,) = store.tmp.iterdir()
    assert store.clean_tmp() == [left] and list(store.tmp.iterdir()) == []


def _killed_during_upload(root: Path) -> None:
    with EraserStore(root).upload_dir() as staging:
        (staging / "eraser.json").write_text("{")
        os._exit(9)  # no clean-up runs: as with kill -9


def test_unopenable_store_is_a_store_error(tmp_path, capsys):
    """A store root that cannot hold the store (a file, a read-only mount) is refused with the
    path named: one line from the CLI, not a traceback."""
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    with pytest.raises(EraserStoreError, match=f"cannot open the eraser store {blocked}"):
        EraserStore(blocked)
    (tmp_path / "bad_index" / "index.sqlite").mkdir(parents=True)
    with pytest.raises(EraserStoreError, match="cannot open the eraser store .*bad_index"):
        EraserStore(tmp_path / "bad_index")

    from sft_eraser.cli import main as sft_eraser_main

    assert sft_eraser_main(["erasers", "list", "--store", str(blocked)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("sft-eraser: error: cannot open the eraser store") and "Traceback" not in err
    )


def test_unreachable_or_missing_database_is_a_store_error(postgres, capsys):
    from server_helpers import free_port

    from sft_eraser.cli import main as sft_eraser_main

    nowhere = f"postgresql://someone:secret@127.0.0.1:{free_port()}/db"
    with pytest.raises(EraserStoreUnavailable, match="unreachable") as info:
        open_store(nowhere)
    assert "secret" not in str(info.value) and "someone:***@" in str(info.value)
    missing = postgres.url("no_such_database")
    with pytest.raises(EraserStoreError, match="no_such_database"):
        open_store(missing)
    assert sft_eraser_main(["erasers", "list", "--store", nowhere]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sft-eraser: error: the eraser store") and len(err.splitlines()) == 1


def test_parse_ref():
    assert parse_ref("fix") == ("fix", None)
    assert parse_ref("fix.v2_x-y@12") == ("fix.v2_x-y", 12)
    bad_refs = ("", "fix@", "fix@0", "fix@-1", "fix@x", "@3", "a/b", "fix@1@2", "-fix")
    # `$` would match before a final newline: such a name could be stored, never removed.
    for bad in bad_refs + ("fix\n", "fix@1\n", "fix\r\n", "\nfix"):
        with pytest.raises(EraserStoreError, match="bad eraser reference"):
            parse_ref(bad)


def store_state(store: EraserStore) -> list:
    return [(r.ref, r.sha256) for r in store.list(all_versions=True)]


@pytest.mark.parametrize("fail_at", ["rename", "after_rename"])
def test_failed_add_leaves_store_as_it_was(tmp_path, monkeypatch, fail_at):
    store = EraserStore(tmp_path / "store")
    store.add(make_eraser(tmp_path / "a", seed=1))
    before = store_state(store)
    src = make_eraser(tmp_path / "b", seed=2)

    def boom(*args):
        raise OSError("injected failure")

    # fsync_dir(objects/<name>) runs after the rename and before the row insert.
    real = store_mod.fsync_dir
    if fail_at == "rename":
        monkeypatch.setattr(store_mod.os, "rename", boom)
    else:
        monkeypatch.setattr(
            store_mod, "fsync_dir", lambda p: boom() if p.parent == store.objects else real(p)
        )
    with pytest.raises(OSError, match="injected"):
        store.add(src)
    monkeypatch.undo()
    assert store_state(store) == before
    assert store.verify() == []  # nothing left behind: no orphan, no tmp leftover
    assert store.add(src).ref == "fix@2"
    assert store.get("fix").meta.sha256 == read_eraser(src).meta.sha256


def _crash_add(root: Path, src: Path, crash_in: str) -> None:
    """Add `src`, dying (no cleanup, no exception) at fsync_dir of `crash_in`."""
    store = EraserStore(root)
    real = store_mod.fsync_dir
    target = {"tmp": store.tmp, "objects": store.objects}[crash_in]

    def fsync_or_die(path):
        if path.parent == target:
            os._exit(3)
        real(path)

    store_mod.fsync_dir = fsync_or_die
    store.add(src)


def test_crash_during_add_is_invisible_and_cleaned(tmp_path):
    root = tmp_path / "store"
    store = EraserStore(root)
    store.add(make_eraser(tmp_path / "a", seed=1))
    before = store_state(store)
    src = make_eraser(tmp_path / "b", seed=2)
    for crash_in in ("tmp", "objects"):  # while staging; after the rename, before the commit
        child = MP.Process(target=_crash_add, args=(root, src, crash_in))
        child.start()
        child.join(60)
        assert child.exitcode == 3
    assert store_state(store) == before
    problems = store.verify()
    assert len(problems) == 2
    assert any(p.startswith("orphan") and "fix/2" in p for p in problems)
    assert any(p.startswith("leftover") for p in problems)
    # The next add takes the orphan's version number and replaces its files.
    assert store.add(src).ref == "fix@2"
    assert [p for p in store.verify() if p.startswith("orphan")] == []
    assert len(store.gc()) == 1 and store.verify() == []
    assert store.get("fix", 2).meta.sha256 == read_eraser(src).meta.sha256


def _crash_pg_add(url: str, src: Path) -> None:
    """Add `src`, dying with its transaction open: after the inserts, before the commit."""
    store = PgEraserStore(url)
    write = store._write

    @contextmanager
    def dying_write():
        with write() as db:
            yield db
            os._exit(3)

    store._write = dying_write
    store.add(src)


def test_crash_during_pg_add_changes_nothing(tmp_path, pg_database):
    store = open_store(pg_database)
    store.add(make_eraser(tmp_path / "a", seed=1))
    before = store_state(store)
    src = make_eraser(tmp_path / "b", seed=2)
    child = MP.Process(target=_crash_pg_add, args=(pg_database, src))
    child.start()
    child.join(60)
    assert child.exitcode == 3
    assert store_state(store) == before and store.verify() == [] and store.gc() == []
    assert store.add(src).ref == "fix@2"  # the dead add's version was never given out


def _add_many(spec: str, src: Path, n: int, barrier) -> None:
    store = open_store(spec)
    barrier.wait()
    for _ in range(n):
        store.add(src)


def test_concurrent_adds_all_land(tmp_path, store_spec):
    """4 processes add 3 versions each of one name at once: versions 1-12, each once."""
    open_store(store_spec)  # created once, as a deployment would
    srcs = [make_eraser(tmp_path / f"e{i}", seed=i) for i in range(4)]
    barrier = MP.Barrier(4)
    children = [MP.Process(target=_add_many, args=(store_spec, s, 3, barrier)) for s in srcs]
    for c in children:
        c.start()
    for c in children:
        c.join(120)
    assert [c.exitcode for c in children] == [0] * 4
    store = open_store(store_spec)
    assert store.versions("fix") == list(range(1, 13))
    shas = [r.sha256 for r in store.list(all_versions=True)]
    assert sorted(shas.count(read_eraser(s).meta.sha256) for s in srcs) == [3] * 4
    assert store.verify() == []


def test_corrupted_eraser_detected(tmp_path, store_spec):
    store = open_store(store_spec)
    bad = store.add(make_eraser(tmp_path / "a", name="a", seed=1))
    store.add(make_eraser(tmp_path / "b", name="b", seed=2))
    flip_stored_byte(store, bad)
    with pytest.raises(EraserCorrupted, match="a@1"):
        store.get("a")
    assert store.get("b").meta.name == "b"
    problems = store.verify()
    assert len(problems) == 1 and "a@1" in problems[0] and "corrupted" in problems[0]

    # Replaced bytes that are self-consistent still differ from what was registered.
    weights = save_safetensors({"prompt_embeddings": torch.zeros(4, HIDDEN)})
    sidecar = json.loads(stored_files(store, bad)[SIDECAR_FILE])
    sidecar["sha256"] = hashlib.sha256(weights).hexdigest()
    damage_stored(store, bad, weights=weights, sidecar=json.dumps(sidecar).encode())
    with pytest.raises(EraserCorrupted, match="a@1.*registered as"):
        store.get("a")
    if isinstance(store, EraserStore):
        for path in bad.path.iterdir():
            path.unlink()
        with pytest.raises(EraserCorrupted, match="a@1.*missing"):
            store.get("a")


# ---- CLI


def run_cli(*argv: str):
    parser = argparse.ArgumentParser(prog="sft-eraser")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli(tmp_path, capsys, store_spec):
    store = store_spec
    src = make_eraser(tmp_path / "e")
    carrier = str(write_carrier(tmp_path / "carrier", {"hidden_size": HIDDEN}))
    assert run_cli("erasers", "add", str(src), "--store", store, "--carrier", carrier) == 0
    assert run_cli("erasers", "add", str(src), "--store", store, "--name", "alias") == 0
    assert "added alias@1" in capsys.readouterr().out
    assert run_cli("erasers", "list", "--store", store, "--carrier", carrier) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "VERSION",
        "BEHAVIOR",
        "TOKENS",
        "HIDDEN",
        "CARRIER",
        "CREATED",
        "FITS",
    ]
    assert [line.split()[:2] for line in lines[1:]] == [["alias", "1"], ["fix", "1"]]
    assert all(line.split()[-1] == "yes" for line in lines[1:])
    assert run_cli("erasers", "verify", "--store", store) == 0

    opened = open_store(store)
    flip_stored_byte(opened, opened.record("alias", 1))
    assert run_cli("erasers", "verify", "--store", store) == 1
    assert "alias@1" in capsys.readouterr().out
    assert run_cli("erasers", "remove", "alias@1", "--store", store) == 0
    assert "removed alias@1" in capsys.readouterr().out
    assert run_cli("erasers", "list", "--all", "--store", store) == 0
    assert "alias" not in capsys.readouterr().out
    with pytest.raises(EraserNotFound):
        run_cli("erasers", "remove", "alias", "--store", store)
    with pytest.raises(EraserStoreError, match="bad eraser reference"):
        run_cli("erasers", "remove", "fix@x", "--store", store)
    with pytest.raises(EraserFormatError, match="not a carrier directory"):
        run_cli("erasers", "list", "--store", store, "--carrier", str(tmp_path))


def test_migrate_keeps_versions_and_is_idempotent(tmp_path, pg_database, capsys):
    root = tmp_path / "store"
    src = EraserStore(root)
    for seed in (1, 2, 3):
        src.add(make_eraser(tmp_path / f"e{seed}", seed=seed))
    src.remove("fix", 2)
    src.add(make_eraser(tmp_path / "o", name="other", seed=4))
    migrate = ("erasers", "migrate", "--from", str(root), "--to", pg_database)
    assert run_cli(*migrate) == 0
    out = capsys.readouterr().out
    assert "copied fix@1\ncopied fix@3\ncopied other@1\n" in out
    assert "3 copied, 0 already there, 0 problems" in out
    dst = open_store(pg_database)
    assert store_state(dst) == store_state(src) and dst.verify() == []

    src.add(make_eraser(tmp_path / "e5", seed=5))  # fix@4
    bad = src.add(make_eraser(tmp_path / "e6", seed=6))  # fix@5, damaged below
    flip_byte(bad.path / WEIGHTS_FILE)
    dst.remove("other")  # other@1 was given out there: never again
    assert run_cli(*migrate) == 1
    out = capsys.readouterr().out
    assert "copied fix@4" in out and "1 copied, 2 already there, 2 problems" in out
    assert "fix@5 is corrupted" in out and "cannot add other@1" in out
    assert [r.ref for r in dst.list(all_versions=True)] == ["fix@1", "fix@3", "fix@4"]
    with pytest.raises(EraserStoreError, match="--to must be a postgresql:// URL"):
        run_cli("erasers", "migrate", "--from", str(root), "--to", str(tmp_path / "x"))
