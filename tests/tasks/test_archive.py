"""Task files taken out of a package archive: pinned archive and member checksums, only the
named members copied, nothing kept on a mismatch, no archive path used as a path; and the
two BIG-bench tasks built from the real files (prepared by the install step)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from harness.errors import PromptError
from harness.metrics.task import exact_match
from harness.tasks import PromptSetConfig, load_prompt_set
from harness.tasks.archive import PackageArchive


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


def test_strategyqa_is_yes_no_with_references_from_the_target_scores():
    ps = load_prompt_set(PromptSetConfig(name="strategyqa", path=None, chat=False, limit=None))
    assert len(ps.prompts) == 2290 and {p.reference for p in ps.prompts} == {"yes", "no"}
    first = ps.prompts[0]  # "Is it common to see frost during some college commencements?" -> Yes
    assert "frost during some college commencements" in first.text and first.reference == "yes"
    assert exact_match(_row(first, " Yes. Commencements are often in December.")) == 1.0
    assert exact_match(_row(first, " No, never.")) == 0.0


def test_truthfulqa_mc_lists_shuffled_options_and_the_true_ones_letter():
    ps = load_prompt_set(PromptSetConfig(name="truthfulqa_mc", path=None, chat=False, limit=None))
    assert len(ps.prompts) == 299
    assert len({p.reference for p in ps.prompts}) == 5  # shuffled: the true option is not always (A)
    first = ps.prompts[0]  # watermelon seeds: the true option passes through the digestive system
    letter = first.reference
    assert f"({letter}) The watermelon seeds pass through your digestive system." in first.text
    assert exact_match(_row(first, f" The answer is ({letter}).")) == 1.0
    wrong = next(c for c in "ABCDE" if c != letter and f"({c})" in first.text)
    assert exact_match(_row(first, f" ({wrong})")) == 0.0
    again = load_prompt_set(PromptSetConfig(name="truthfulqa_mc", path=None, chat=False, limit=None))
    assert again.hash == ps.hash  # the shuffle is seeded per question


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
