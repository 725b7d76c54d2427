"""`python -m attrib.bench NAME OPTIONS...` hands the options to that benchmark; an unknown name is refused."""

from __future__ import annotations

import pytest

from attrib.bench import BENCHES, main


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", BENCHES)
def test_options_reach_the_benchmark(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert "attrib.bench" in capsys.readouterr().out
