"""Digests and verdicts of the bootc/ tree, without podman."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from devbox.core.freshness import ManifestStore, judge, scan


def tree(tmp: Path) -> Path:
    root = tmp / "bootc"
    (root / "homedir" / ".local" / "bin").mkdir(parents=True)
    (root / "Containerfile").write_text("FROM x\n")
    (root / "homedir" / ".gitconfig").write_text("[user]\n")
    (root / "homedir" / ".local" / "bin" / "start").write_text("#!/bin/sh\n")
    os.symlink("Containerfile", root / "link")
    return root


def test_touch_keeps_digest_and_content_with_old_mtime_changes_it(tmp_path: Path) -> None:
    root = tree(tmp_path)
    cache = tmp_path / "cache.json"
    first = scan(root, cache)
    later = time.time() + 100
    for p in root.rglob("*"):
        os.utime(p, (later, later), follow_symlinks=False)
    assert scan(root, cache).digest == first.digest

    cf = root / "Containerfile"
    st = cf.stat()
    cf.write_text("FROM y\n")  # same size, mtime put back
    os.utime(cf, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = scan(root, cache)
    assert changed.digest != first.digest
    store = ManifestStore(tmp_path / "manifests")
    store.save(first)
    verdict = judge(changed, first.digest, store, "bootc/")
    assert not verdict.fresh
    assert verdict.reasons == ("bootc/Containerfile changed",)


def test_reasons_name_added_removed_mode_and_unknown(tmp_path: Path) -> None:
    root = tree(tmp_path)
    store = ManifestStore(tmp_path / "m")
    before = scan(root)
    store.save(before)
    (root / "homedir" / ".gitconfig").unlink()
    (root / "new.sh").write_text("x")
    (root / "Containerfile").chmod(0o755)
    after = scan(root)
    assert judge(after, before.digest, store, "bootc/").reasons == (
        "bootc/Containerfile mode changed",
        "bootc/homedir/.gitconfig removed",
        "bootc/new.sh added",
    )
    assert judge(after, after.digest, store, "bootc/").fresh
    assert judge(after, "0" * 64, store, "bootc/").reasons == ("bootc/ changed since the image was built",)
    assert judge(after, None, store, "bootc/").reasons == ("image missing",)


def test_warm_scan_trusts_unchanged_stat_and_rehashes_only_touched_files(tmp_path: Path) -> None:
    root = tree(tmp_path)
    cache = tmp_path / "cache.json"
    real = scan(root, cache).digest
    sig_file = cache.with_suffix(".sig")
    sig, _ = sig_file.read_text().split()
    sig_file.write_text(f"{sig} {'e' * 64}\n")  # poison: an unchanged tree must not be re-read
    assert scan(root, cache).digest == "e" * 64

    data = json.loads(cache.read_text())
    data["files"]["homedir/.gitconfig"][4] = "f" * 64  # poison an untouched file's hash
    cache.write_text(json.dumps(data))
    (root / "Containerfile").write_text("FROM x\n")  # rewritten: stat moves, slow path
    warm = scan(root, cache)
    assert warm.entries["homedir/.gitconfig"].endswith("f" * 64)  # reused, not re-read
    assert warm.entries["Containerfile"] == scan(root).entries["Containerfile"]  # re-hashed
    cache.unlink()
    sig_file.unlink()
    assert scan(root, cache).digest == real


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    root = tree(tmp_path)
    cache = tmp_path / "cache.json"
    good = scan(root).digest
    cache.write_text("{not json")
    assert scan(root, cache).digest == good
