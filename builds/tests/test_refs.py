"""Branch names and commit ids: git's ref-format rules in Python, checked against `git check-ref-format` itself.

`git_branch_name_problem` must agree with `git check-ref-format --branch` on
every name of the corpus below (every ASCII character alone and in every
position that matters, the rules' edge cases, non-ASCII text), so the two
cannot disagree on it; `branch_name_problem` refuses a superset, and only
for Swarm's own reasons.
"""
from __future__ import annotations

import shutil
import string
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from builds.config import (
    MAX_BRANCH_CHARS,
    branch_name_problem,
    commit_sha_problem,
    git_branch_name_problem,
    validate_branch_filter,
)
from swarm.core.errors import ApiError

EDGE_CASES = [
    "main", "feature/login", "release/1.2", "a./b", "a.", "x.lock", "x.lock/y", "a/b.lock", "lock", ".lock",
    "a.lock.b", ".x", "a/.b", "a//b", "/a", "a/", "a..b", "...", ".", "..", "a/.", "a/..", "a@{b", "@{-1}",
    "a@{u}", "a@b", "a@", "@a", "@@", "@", "HEAD", "x/HEAD", "HEADS", "FETCH_HEAD", "-x", "a/-b", "--x", "a-",
    "refs/heads/x", "{", "}", "a{b", "../../etc", "../../etc/passwd", "a\nb", "a\x1bb", "a\x7fb", "a b", " a",
    "a ", "a\tb", "a~1", "a^2", "a:b", "a?b", "a*b", "a[b", "a]b", "a\\b", "x" * 255, "a/b/c/d/e/f",
    "é", "naïve", "日本語", "emoji-\U0001F600", "a\u202eb", "\u202e", "a\u200bb", "\ufeffmain", "a\u00a0b",
    "a\u2028b", "a\u0085b", "a\u00adb", "a\u2066b", "ü/.x", "ü.lock",
]


def _corpus() -> list[str]:
    names = list(EDGE_CASES)
    for code in range(1, 128):  # NUL cannot be an argument: the Python rules refuse it (below)
        character = chr(code)
        names += [character, f"a{character}b", f"{character}ab", f"ab{character}", f"a/{character}b",
                  f"a{character}/b", f"{character}{character}"]
    for first in ".@/-{":
        for second in ".@/-{l":
            names.append(f"a{first}{second}b")
    return sorted(set(names))


def _git_accepts(name: str) -> bool:
    result = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, cwd="/",
                            env={"PATH": "/usr/bin:/bin", "GIT_CEILING_DIRECTORIES": "/"})
    return result.returncode == 0


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_python_rules_agree_with_git_check_ref_format_on_the_corpus():
    corpus = _corpus()
    assert len(corpus) > 800
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = dict(zip(corpus, pool.map(_git_accepts, corpus), strict=True))
    disagreements = {name: (accepted, git_branch_name_problem(name)) for name, accepted in verdicts.items()
                     if accepted != (git_branch_name_problem(name) is None)}
    assert disagreements == {}, disagreements
    # Swarm refuses more than git, never less, and only for its own reasons.
    for name, accepted in verdicts.items():
        if not accepted:
            assert branch_name_problem(name) is not None, name
        elif branch_name_problem(name) is not None:
            assert name == "@" or len(name) > MAX_BRANCH_CHARS or not name.isascii(), name


def test_nul_and_lone_surrogates_are_refused_though_git_never_sees_them():
    assert git_branch_name_problem("a\x00b") is not None
    assert branch_name_problem("a\ud800b") is not None


@pytest.mark.parametrize("name", ["a\nb", "a\x1bb", "a\u202eb", "../../etc", "-upload-pack=x", "@", "x" * 201,
                                  "a\u200bb", "main\u00a0", "HEAD", 5, None, ["main"]])
def test_hostile_branch_names_are_refused(name):
    assert branch_name_problem(name) is not None


@pytest.mark.parametrize("name", ["main", "feature/login-2", "release/v1.2.3", "naïve", "user@host", "x" * 200])
def test_ordinary_branch_names_are_taken(name):
    assert branch_name_problem(name) is None


@pytest.mark.parametrize(("sha", "ok"), [("abc1234", True), ("ABC1234", True), ("a" * 40, True), ("0" * 64, True),
                                         ("abc123", False), ("a" * 65, False), ("abcdefg", False),
                                         ("abc 1234", False), ("", False), (1234567, False),
                                         ("\uff41bc1234", False)])
def test_commit_ids_are_7_to_64_hex_digits(sha, ok):
    assert (commit_sha_problem(sha) is None) == ok


@pytest.mark.parametrize(("branch_filter", "ok"), [("", True), ("main,release/*", True), ("feat-?,[0-9]*", True),
                                                   ("main, dev", True), ("a\nb", False), ("*\u202e", False),
                                                   ("release/*.lock", False), ("../*", False), ("-*", False)])
def test_branch_filter_globs_must_be_able_to_match_a_valid_name(branch_filter, ok):
    if ok:
        assert validate_branch_filter(branch_filter) == branch_filter
    else:
        with pytest.raises(ApiError) as refused:
            validate_branch_filter(branch_filter)
        assert (refused.value.code, refused.value.field) == ("invalid_ref", "branch_filter")


def test_the_corpus_covers_every_printable_ascii_character():
    corpus = set(_corpus())
    assert all(f"a{character}b" in corpus for character in string.printable if character != "\x00")
