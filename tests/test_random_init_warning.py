"""The random-init warning reaches every output from what the weights are: deleting the manifest's
free-text ``label`` removes it nowhere (console, results lines, tables, saved heads), and `cache verify`
reports the edited manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from attrib.cli import main
from attrib.manifest import RANDOM_INIT_LABEL
from attrib.probe.persist import load_head
from attrib.store import MANIFEST, FeatureSet


def _run(*args: str, code: int = 0):
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


@pytest.mark.slow
def test_deleting_the_label_keeps_the_warning_everywhere(demo_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = _run("features", "--dataset", "demo", "--root", str(demo_root), "--model", "attrib-tiny", "--cache",
               str(cache), "--workers", "0", "--quiet").stdout
    fs_path = Path(out.strip().splitlines()[-1])
    manifest = json.loads((fs_path / MANIFEST).read_text())
    assert manifest.pop("label") == RANDOM_INIT_LABEL
    (fs_path / MANIFEST).write_text(json.dumps(manifest, indent=2))
    fs = FeatureSet.open(fs_path)
    assert fs.manifest.label == "" and fs.label == RANDOM_INIT_LABEL

    assert f"[{RANDOM_INIT_LABEL}]" in _run("cache", "ls", str(cache)).output
    assert f"WARNING: {RANDOM_INIT_LABEL}" in _run("cache", "info", str(fs_path)).output
    ver = _run("cache", "verify", str(fs_path), code=1).output
    assert "manifest.json: label is '' but the weights are untrained" in ver and "verification failed" in ver

    res_dir, head_dir = tmp_path / "r", tmp_path / "head"
    probe = _run("probe", "--features", str(fs_path), "--layers", "3", "--splits", "1", "--save-head", str(head_dir),
                 "--out", str(res_dir), "--quiet")
    assert f"{fs.id}: {RANDOM_INIT_LABEL}" in probe.stderr
    assert f"the saved head was trained on {RANDOM_INIT_LABEL}" in probe.stderr
    lines = [json.loads(x) for x in (res_dir / "results.jsonl").read_text().splitlines()]
    assert lines and all(x["label"] == RANDOM_INIT_LABEL for x in lines)
    assert "WARNING — random-init" in (res_dir / "table.md").read_text()
    assert RANDOM_INIT_LABEL in (res_dir / "table.csv").read_text()
    assert load_head(head_dir).label == RANDOM_INIT_LABEL
    assert json.loads((head_dir / "head.json").read_text())["label"] == RANDOM_INIT_LABEL
