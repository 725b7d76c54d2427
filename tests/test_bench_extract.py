"""The decode benchmark measures real rows: every kind it names is written, decoded and transformed
without error, and the DataLoader figure counts the images that went through the runner's loader."""

from __future__ import annotations

import re

import pytest

from attrib.bench import extract as bench


def test_decode_benchmark_reports_every_kind_and_the_loader(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--only", "decode", "--model", "attrib-tiny", "--pretrained", "random-init",
                       "--preprocess", "paper", "--decode-images", "2", "--loader-images", "12",
                       "--batch-size", "4", "--workers", "1", "--repeats", "1", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "preprocess 'paper' -> 3x64x64" in out
    for kind in bench.DECODE_KINDS:
        line = next(ln for ln in out.splitlines() if f" {kind}:" in ln)
        dec, trans, row = map(float, re.findall(r"([\d.]+) ms", line))
        assert dec > 0 and trans > 0 and row > 0
    loader = next(ln for ln in out.splitlines() if "DataLoader" in ln)
    # 12 images in batches of 4, the first batch left out of the timing
    assert "1 worker(s)" in loader and "8 images after the first batch" in loader
    assert float(re.search(r"no model: ([\d.]+) img/s", loader).group(1)) > 0
    assert list(tmp_path.iterdir()) == []  # the temporary folder is removed


def test_a_bench_image_that_fails_to_decode_stops_the_measurement(tmp_path) -> None:
    """A rate of failures (zero tensors made at once) would look fast: the benchmark refuses it."""
    from attrib.data.catalog import read_folder
    from attrib.extract.backbone import load_backbone
    from attrib.extract.runner import ImageRows, _input_shape
    from attrib.extract.views import View

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    bb = load_backbone("attrib-tiny", "random-init")
    rows = ImageRows(read_folder(tmp_path), bb.transform, View(), _input_shape(bb))
    with pytest.raises(AssertionError, match="broken.png failed"):
        bench._row_ok(rows, 0)
    with pytest.raises(AssertionError, match="a bench image failed"):
        bench._loader_rate(rows, batch_size=1, images=2, workers=0)


def test_extraction_benchmark_times_the_model_alone_and_the_whole_run(tmp_path, capsys) -> None:
    assert bench.main(["--only", "extract", "--model", "attrib-tiny", "--pretrained", "random-init",
                       "--images", "8", "--batch-size", "4", "--shard-size", "8", "--workers", "0",
                       "--repeats", "1", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "attrib-tiny (random-init) on CPU (" in out and ", fp32, 8 images" in out
    bare = float(re.search(r"bare forward: .*\(([\d.]+) img/s best\)", out).group(1))
    e2e = float(re.search(r"end-to-end: .*\(([\d.]+) img/s best\)", out).group(1))
    assert bare >= e2e > 0   # the whole run also decodes (512 px PNGs), far slower than this tiny model
    assert re.search(r"end-to-end / bare forward, run by run: [\d.]+; median [\d.]+ \(goal <= 1.15\)", out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_extraction_benchmark_on_cuda_without_a_gpu_says_so(tmp_path) -> None:
    from attrib.extract.runner import ExtractError

    with pytest.raises(ExtractError, match="no CUDA device is visible"):
        bench.main(["--only", "extract", "--device", "cuda", "--model", "attrib-tiny", "--images", "2",
                    "--dir", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


def test_read_benchmark_writes_a_feature_set_and_times_its_block_reads(tmp_path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--only", "read", "--rows", "300", "--repeats", "1", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[read] 300 rows x 12 blocks x 768 dims fp16 in 1 shards" in out
    warm = next(ln for ln in out.splitlines() if ln.startswith("[read] warm:"))
    assert float(re.search(r"numpy cast ([\d.]+) MB/s", warm).group(1)) > 0
    assert list(tmp_path.iterdir()) == []
