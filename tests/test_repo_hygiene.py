"""Repository hygiene: tracked text never quotes one machine's paths, and the README cites the paper correctly.

A path such as ``/tmp/exp/run``, ``/home/<user>/...`` or a run folder that only existed on one machine
(``outputs/demo_final``) tells a reader nothing and breaks when followed. Code that needs a scratch folder
uses :mod:`tempfile` (or pytest's ``tmp_path``), which never appears as a literal path.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: machine-specific path patterns (a leading non-word char keeps ``repo/tmp/`` style relative paths legal)
FORBIDDEN = {
    "absolute /tmp path": re.compile(r"(?<![\w.])/tmp/[\w.-]"),
    "home folder": re.compile(r"(?<![\w.])(/home/[\w.-]+|/Users/[\w.-]+|/root/)"),
    "workspace folder": re.compile(r"(?<![\w.])/(work|mnt|scratch)/[\w.-]"),
    "one machine's run folder": re.compile(r"outputs/demo_final"),
}

#: (path, pattern name) -> why the hit is legitimate
ALLOWED: dict[tuple[str, str], str] = {
    ("tests/test_config.py", "absolute /tmp path"): "a literal override value parsed and saved, never a folder used",
    ("tests/test_repo_hygiene.py", "absolute /tmp path"): "this test names the patterns it forbids",
    ("tests/test_repo_hygiene.py", "home folder"): "this test names the patterns it forbids",
    ("tests/test_repo_hygiene.py", "workspace folder"): "this test names the patterns it forbids",
    ("tests/test_repo_hygiene.py", "one machine's run folder"): "this test names the patterns it forbids",
}

MAX_BYTES = 20 * 2**20


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (git ls-files failed)")
    files = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        head = path.read_bytes()[:8192]
        if b"\0" not in head:
            files.append(path)
    return files


def offending_lines(path: Path, rel: str) -> list[str]:
    hits = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        for kind, pattern in FORBIDDEN.items():
            if pattern.search(line) and (rel, kind) not in ALLOWED:
                hits.append(f"{rel}:{lineno}: {kind}: {line.strip()[:120]}")
    return hits


def test_patterns_catch_machine_paths_and_spare_relative_ones():
    bad = ["--out /tmp/exp/run", "'/home/alice/rlsd'", "/root/.cache", "cd /work/project", "outputs/demo_final/run"]
    good = ["outputs/demo/per_seed.csv", "data/shapesworld_base", "runs/tmp/x", "tempfile.mkdtemp()", "a/b/tmp/c"]
    assert all(any(p.search(s) for p in FORBIDDEN.values()) for s in bad)
    assert not any(p.search(s) for s in good for p in FORBIDDEN.values())


def test_no_tracked_text_file_quotes_a_machine_specific_path():
    files = tracked_text_files()
    assert any(f.name == "README.md" for f in files)
    hits = [hit for f in files for hit in offending_lines(f, f.relative_to(ROOT).as_posix())]
    assert not hits, ("machine-specific paths in tracked files (use a relative path, or tempfile in code; "
                      "re-run the command that wrote a generated file):\n" + "\n".join(hits))


def test_allowlist_entries_are_still_needed():
    stale = [key for key in ALLOWED if not (ROOT / key[0]).is_file()
             or not FORBIDDEN[key[1]].search((ROOT / key[0]).read_text(encoding="utf-8", errors="replace"))]
    assert not stale, f"remove these ALLOWED entries, they match nothing: {stale}"


def test_readme_cites_the_paper_in_author_order():
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "Zhang, Tzeng, Du, Kislyuk" in text
    assert "2401.12244" in text
    names = [text.find(n) for n in ("Zhang", "Tzeng", "Du,", "Kislyuk")]
    assert names == sorted(names) and names[0] >= 0, "cite Zhang, Tzeng, Du, Kislyuk in this order"
