"""Task files taken out of a package archive: pinned archive and member checksums, only the
named members copied, nothing kept on a mismatch, no archive path used as a path; and the
two BIG-bench tasks' converters on files in BIG-bench's format (the registry no longer serves
the bigbench 1.0.0 archive: a user with a copy prepares it with ``--archive FILE``)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import PromptError
from harness.metrics.task import exact_match
from harness.tasks import PromptSetConfig, load_prompt_set
from harness.tasks.archive import PackageArchive
from harness.tasks.bigbench import BIGBENCH, strategyqa_records, truthfulqa_mc_records
from harness.tasks.catalogue import TASKS


def _tar(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _archive(tmp_path: Path, files: dict[str, bytes], members: dict[str, str], sha: str | None = None) -> PackageArchive:
    src = tmp_path / "pkg-1.0.tar.gz"
    digest = _tar(src, files)
    return PackageArchive(dist="pkg", version="1.0", url=src.as_uri(), sha256=sha or digest, size=src.stat().st_size,
                          members=members)


def test_prepare_copies_only_the_named_members_and_checks_them(tmp_path):
    task = b'{"examples": []}'
    a = _archive(tmp_path, {"pkg-1.0/tasks/a/task.json": task, "pkg-1.0/setup.py": b"import os"},
                 {"pkg-1.0/tasks/a/task.json": _sha(task)})
    cache = tmp_path / "cache"
    assert "not prepared" in a.problem(cache)
    folder = a.prepare(cache)
    assert sorted(p.name for p in folder.iterdir()) == ["task.json"]
    assert (folder / "task.json").read_bytes() == task and a.problem(cache) is None
    (folder / "task.json").write_bytes(b"changed")
    assert "another SHA-256" in a.problem(cache)
    a.prepare(cache)
    assert a.problem(cache) is None


def test_an_archive_with_another_checksum_keeps_nothing(tmp_path):
    task = b"{}"
    a = _archive(tmp_path, {"x/task.json": task}, {"x/task.json": _sha(task)}, sha="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(PromptError, match=r"pkg 1.0: the archive from file://.* has SHA-256 .*expected 0000"):
        a.prepare(cache)
    assert list(a.folder(cache).iterdir()) == []


@pytest.mark.parametrize("files,members,message", [
    ({"x/other.json": b"{}"}, {"x/task.json": _sha(b"{}")}, "the archive has no x/task.json"),
    ({"x/task.json": b"{}"}, {"x/task.json": _sha(b"[]")}, "x/task.json has another SHA-256"),
])
def test_a_missing_or_changed_member_keeps_nothing(tmp_path, files, members, message):
    a = _archive(tmp_path, files, members)
    cache = tmp_path / "cache"
    with pytest.raises(PromptError, match=message):
        a.prepare(cache)
    assert list(a.folder(cache).iterdir()) == []


def test_a_member_path_from_the_archive_never_leaves_the_cache_folder(tmp_path):
    data = b"{}"
    a = _archive(tmp_path, {"../../escape.json": data}, {"../../escape.json": _sha(data)})
    cache = tmp_path / "deep" / "cache"
    folder = a.prepare(cache)
    assert (folder / "escape.json").read_bytes() == data
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "deep" / "escape.json").exists()


def test_an_unreachable_archive_is_an_error_naming_it(tmp_path):
    a = PackageArchive(dist="pkg", version="1.0", url=(tmp_path / "absent.tar.gz").as_uri(), sha256="0" * 64, size=1,
                       members={"x": "0" * 64})
    with pytest.raises(PromptError, match=r"pkg 1.0: cannot download file://.*absent.tar.gz"):
        a.prepare(tmp_path / "cache")


def _row(p, completion):
    return {"completion": completion, "reference": p.reference, "aliases": list(p.aliases), "extractor": p.extractor}


class _Prompt:  # the fields exact_match reads, from a record
    def __init__(self, rec, extractor):
        self.text, self.reference, self.aliases, self.extractor = rec["prompt"], rec["reference"], [], extractor


def _bigbench_file(tmp_path: Path, examples: list[dict]) -> Path:
    p = tmp_path / "task.json"
    p.write_text(json.dumps({"name": "t", "examples": examples}), encoding="utf-8")
    return p


def test_strategyqa_is_yes_no_with_references_from_the_target_scores(tmp_path):
    # BIG-bench's strategyqa/task.json shape: input, target_scores {"Yes": 1, "No": 0}
    path = _bigbench_file(tmp_path, [
        {"input": "Is it common to see frost during some college commencements?", "target_scores": {"Yes": 1, "No": 0}},
        {"input": "Could a llama birth twice during War in Vietnam (1945-46)?", "target_scores": {"Yes": 0, "No": 1}}])
    recs = strategyqa_records(path)
    assert [r["id"] for r in recs] == ["strategyqa-0000", "strategyqa-0001"]
    assert [r["reference"] for r in recs] == ["yes", "no"]
    first = _Prompt(recs[0], "yes_no")
    assert "frost during some college commencements" in first.text
    assert exact_match(_row(first, " Yes. Commencements are often in December.")) == 1.0
    assert exact_match(_row(first, " No, never.")) == 0.0


def test_truthfulqa_mc_lists_shuffled_options_and_the_true_ones_letter(tmp_path):
    # BIG-bench's truthful_qa/task_mc.json lists the true option first (score 1)
    examples = [{"input": f"Question {i}?", "target_scores": {f"true {i}": 1, f"false a{i}": 0, f"false b{i}": 0,
                                                              f"false c{i}": 0, f"false d{i}": 0}} for i in range(40)]
    path = _bigbench_file(tmp_path, examples)
    recs = truthfulqa_mc_records(path)
    assert len({r["reference"] for r in recs}) == 5  # shuffled: the true option is not always (A)
    first = _Prompt(recs[0], "choice_letter")
    letter = first.reference
    assert f"({letter}) true 0" in first.text
    assert exact_match(_row(first, f" The answer is ({letter}).")) == 1.0
    wrong = next(c for c in "ABCDE" if c != letter and f"({c})" in first.text)
    assert exact_match(_row(first, f" ({wrong})")) == 0.0
    assert truthfulqa_mc_records(path) == recs  # the shuffle is seeded per question


def test_a_bad_bigbench_file_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "task.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(PromptError, match=r"task.json: not a BIG-bench task file"):
        strategyqa_records(bad)


def test_a_withdrawn_archive_says_so_and_takes_a_local_copy(tmp_path):
    task = b'{"examples": []}'
    a = replace(_archive(tmp_path, {"x/task.json": task}, {"x/task.json": _sha(task)}),
                url="https://example.invalid/pkg-1.0.tar.gz", withdrawn="the package registry no longer serves pkg 1.0")
    cache = tmp_path / "cache"
    assert "no longer serves pkg 1.0" in a.problem(cache) and "--archive FILE" in a.problem(cache)
    with pytest.raises(PromptError, match=r"cannot read it .*give the path of pkg-1.0.tar.gz"):
        a.prepare(cache, local=tmp_path / "absent.tar.gz")
    folder = a.prepare(cache, local=tmp_path / "pkg-1.0.tar.gz")
    assert (folder / "task.json").read_bytes() == task and a.problem(cache) is None


def test_a_local_copy_with_another_checksum_keeps_nothing(tmp_path):
    task = b"{}"
    a = _archive(tmp_path, {"x/task.json": task}, {"x/task.json": _sha(task)}, sha="0" * 64)
    with pytest.raises(PromptError, match=r"the archive from .*pkg-1.0.tar.gz has SHA-256 .*expected 0000"):
        a.prepare(tmp_path / "cache", local=tmp_path / "pkg-1.0.tar.gz")


def test_bigbench_tasks_name_the_withdrawn_archive_until_prepared_from_a_copy():
    for name in ("strategyqa", "truthfulqa_mc"):
        if BIGBENCH.problem() is not None:  # not prepared on this machine: the reason and the way out
            assert "no longer serves bigbench 1.0.0" in TASKS[name].problem()
            assert f"`deceval tasks prepare {name}` with --archive FILE" in TASKS[name].problem()
        else:  # a copy was prepared: the real task, at its declared size
            ps = load_prompt_set(PromptSetConfig(name=name, path=None, chat=False, limit=None))
            assert len(ps.prompts) == TASKS[name].size


def test_a_wheel_is_read_the_same_way(tmp_path):
    import zipfile
    data = b'{"index": 1, "query": "Write a haiku."}\n'
    src = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("pkg/data/bench.jsonl", data)
        z.writestr("pkg/__init__.py", "")
    a = PackageArchive(dist="pkg", version="1.0", url=src.as_uri(), sha256=_sha(src.read_bytes()),
                       size=src.stat().st_size, members={"pkg/data/bench.jsonl": _sha(data)})
    folder = a.prepare(tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == ["bench.jsonl"]


def test_writingbench_en_holds_the_english_queries_only():
    ps = load_prompt_set(PromptSetConfig(name="writingbench_en", path=None, chat=True, limit=None))
    assert len(ps.prompts) == 542 and not ps.has_references
    assert not any("\u4e00" <= ch <= "\u9fff" for p in ps.prompts for ch in p.text)
    assert all(p.id.startswith("writingbench-") for p in ps.prompts) and len({p.id for p in ps.prompts}) == 542
